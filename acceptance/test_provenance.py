"""AC-SHIP2-012 / AC-SHIP1-009: license, data source and data license in every format a model ships."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("model", [
    pytest.param("model2", marks=pytest.mark.ac("AC-SHIP2-012")),
    pytest.param("model1", marks=pytest.mark.ac("AC-SHIP1-009")),
])
def test_provenance_in_every_format(criterion, request, model):
    from shiptwo.formats.release import missing_provenance

    artifacts = request.getfixturevalue(f"{model}_artifacts")
    formats = [artifacts.checkpoint] + [request.getfixturevalue(f"{model}_{f}") for f in ("hf_dir", "gguf_f32", "gguf_q8_0")]
    missing = missing_provenance(formats)
    criterion.check(len(missing), evidence={"checked": [str(f) for f in formats], "missing": missing})
