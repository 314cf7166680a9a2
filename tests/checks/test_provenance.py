"""Provenance values: every part of every format must hold the declared license, data source and
data license; a differing value fails (AC-SHIP1-009, AC-SHIP2-012)."""

from __future__ import annotations

import json

import pytest

from shiptwo.checks.provenance import provenance_defects
from shiptwo.errors import ShiptwoError
from tests.conftest import TINY_PROVENANCE


@pytest.fixture(scope="module")
def formats(tmp_path_factory, tiny_checkpoint):
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.hf import export_hf
    from shiptwo.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("prov")
    return [tiny_checkpoint, export_hf(ckpt, out / "hf"), export_gguf(ckpt, out / "m.gguf", "f32")]


def test_declared_values_in_every_part_pass(formats):
    assert provenance_defects(formats, TINY_PROVENANCE) == {}
    assert provenance_defects(formats, {"license": TINY_PROVENANCE["license"]}) == {}


def test_a_license_that_differs_from_the_declared_one_fails(formats):
    found = provenance_defects(formats, {**TINY_PROVENANCE, "license": "MIT"})
    assert len(found) == 4  # checkpoint, HF config, HF weights, GGUF: present everywhere, but not the declared value
    assert all(d == ["license is 'Apache-2.0', declared 'MIT'"] for d in found.values())


def test_an_undeclared_field_rewritten_by_one_format_fails(formats, tmp_path):
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(formats[1], hf)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "data_license": "CC-BY-NC-4.0"}))
    found = provenance_defects([formats[0], hf, formats[2]], {"license": "Apache-2.0"})
    assert list(found) == [str(hf / "config.json")]
    assert found[str(hf / "config.json")] == ["data_license is 'CC-BY-NC-4.0', recorded in the first format 'PSF-2.0'"]


def test_unknown_declared_field_is_an_error(formats):
    with pytest.raises(ShiptwoError, match="unknown field"):
        provenance_defects(formats, {"licence": "MIT"})
