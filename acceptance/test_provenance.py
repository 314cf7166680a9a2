"""AC-SHIP2-012 / AC-SHIP1-009: license, data source and data license in every format a model ships,
each with its declared value."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("model", [
    pytest.param("model2", marks=pytest.mark.ac("AC-SHIP2-012")),
    pytest.param("model1", marks=pytest.mark.ac("AC-SHIP1-009")),
])
def test_provenance_in_every_format(criterion, request, model):
    """Each part of each shipped format, read from the file itself, holds the declared license (the
    spec's) and the data source and license its recipe declares (re-derived here, not read from a
    build record): MODEL-2's corpus; MODEL-1's base declaration (and tuning corpus). MODEL-1 is
    checked on what its release ships: checkpoint, HF directory and every quantized GGUF."""
    from shiptwo.checks.provenance import model1_declared_provenance, model2_declared_provenance, provenance_defects

    artifacts = request.getfixturevalue(f"{model}_artifacts")
    if model == "model1":
        from shiptwo.checks.release import shipped_artifacts
        from shiptwo.training.recipes import load_model1_recipe

        formats = list(shipped_artifacts(artifacts.files, criterion.param("quantized_formats"),
                                         f"{criterion.id} quantized_formats").values())
        declared = model1_declared_provenance(load_model1_recipe(criterion.profile), criterion.param("license"))
    else:
        formats = [artifacts.checkpoint] + [request.getfixturevalue(f"{model}_{f}") for f in ("hf_dir", "gguf_f32", "gguf_q8_0")]
        declared = model2_declared_provenance(criterion.profile, criterion.param("license"))
    defects, fields = provenance_defects(formats, declared)
    criterion.check(sum(len(d) for d in defects.values()), n=sum(fields.values()), evidence={  # n: fields read, every part
        "checked": [str(f) for f in formats], "declared": declared, "defects": defects, "fields_checked": fields})
