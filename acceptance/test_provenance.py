"""AC-SHIP2-012 / AC-SHIP1-009: license, data source and data license in every format a model ships,
each with its declared value."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("model", [
    pytest.param("model2", marks=pytest.mark.ac("AC-SHIP2-012")),
    pytest.param("model1", marks=pytest.mark.ac("AC-SHIP1-009")),
])
def test_provenance_in_every_format(criterion, request, model):
    """Each part of each shipped format holds the declared license (the spec's), and for MODEL-2
    the data source and license its recipe's corpus declares (re-derived here, not read from a build record)."""
    from shiptwo.checks.provenance import provenance_defects
    from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE

    artifacts = request.getfixturevalue(f"{model}_artifacts")
    formats = [artifacts.checkpoint] + [request.getfixturevalue(f"{model}_{f}") for f in ("hf_dir", "gguf_f32", "gguf_q8_0")]
    declared = {META_LICENSE: criterion.param("license")}
    if model == "model2":
        from shiptwo.data.corpus import load_corpus
        from shiptwo.training.recipes import load_recipe

        corpus = load_corpus(load_recipe("model2", criterion.profile).corpus)
        declared.update({META_DATA_SOURCE: corpus.data_source, META_DATA_LICENSE: corpus.data_license})
    defects = provenance_defects(formats, declared)
    criterion.check(sum(len(d) for d in defects.values()), evidence={
        "checked": [str(f) for f in formats], "declared": declared, "defects": defects})
