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
    found, checked = provenance_defects(formats, TINY_PROVENANCE)
    assert found == {} and provenance_defects(formats, {"license": TINY_PROVENANCE["license"]})[0] == {}
    # what the count is over: checkpoint, HF config, HF weights, GGUF, each with its three fields
    assert len(checked) == 4 and set(checked.values()) == {3}


def test_a_license_that_differs_from_the_declared_one_fails(formats):
    found, _ = provenance_defects(formats, {**TINY_PROVENANCE, "license": "MIT"})
    assert len(found) == 4  # checkpoint, HF config, HF weights, GGUF: present everywhere, but not the declared value
    assert all(d == ["license is 'Apache-2.0', declared 'MIT'"] for d in found.values())


def test_an_undeclared_field_rewritten_by_one_format_fails(formats, tmp_path):
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(formats[1], hf)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "data_license": "CC-BY-NC-4.0"}))
    found, checked = provenance_defects([formats[0], hf, formats[2]], {"license": "Apache-2.0"})
    assert str(hf / "config.json") in checked and sum(checked.values()) == 12
    assert list(found) == [str(hf / "config.json")]
    assert found[str(hf / "config.json")] == ["data_license is 'CC-BY-NC-4.0', recorded in the first format 'PSF-2.0'"]


def test_unknown_declared_field_is_an_error(formats):
    with pytest.raises(ShiptwoError, match="unknown field"):
        provenance_defects(formats, {"licence": "MIT"})


def _packaged(**declared):
    from shiptwo.training.recipes import PackagedBase

    return PackagedBase(package="pkg", file="m.gguf", sha256="0" * 64, name="Tiny", source="https://example.org/tiny",
                        license="Apache-2.0", data_source=declared.get("data_source", "a declared mix"),
                        data_license=declared.get("data_license", "CC-BY-4.0"))


def test_model1_is_held_to_its_base_declaration_not_only_to_agreement(tmp_path, tiny_checkpoint):
    """AC-SHIP1-009: every shipped format (quantized GGUFs read back with the gguf reader) carries
    what the recipe's base declares; formats that agree with each other on another value fail."""
    import dataclasses

    from shiptwo.builds.model1 import packaged_provenance
    from shiptwo.checks.provenance import model1_declared_provenance
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.hf import export_hf
    from shiptwo.model.checkpoint import load_checkpoint, save_checkpoint
    from shiptwo.training.recipes import load_model1_recipe

    recipe = dataclasses.replace(load_model1_recipe("default"), base=_packaged(), sft=None)
    declared = model1_declared_provenance(recipe, "Apache-2.0")
    assert declared["data_license"] == "CC-BY-4.0" and "a declared mix" in declared["data_source"]
    assert declared == packaged_provenance(recipe.base)  # the license the spec declares is the base's here

    def release(provenance, name):
        ckpt = load_checkpoint(tiny_checkpoint)
        ckpt.provenance = dict(provenance)
        d = tmp_path / name
        path = save_checkpoint(ckpt, d / "model1.safetensors")
        return [path, export_hf(ckpt, d / "hf"), export_gguf(ckpt, d / "model1-q8_0.gguf", "q8_0")]

    assert provenance_defects(release(declared, "as-declared"), declared)[0] == {}
    # the defect: every format agrees, on provenance the recipe does not declare (here: the tiny
    # model's own); agreement alone would pass it
    found, _ = provenance_defects(release(TINY_PROVENANCE, "undeclared"), declared)
    assert len(found) == 4 and all(len(d) == 2 for d in found.values())  # checkpoint, HF config + weights, GGUF
    assert any(p.endswith("model1-q8_0.gguf") for p in found)


def test_model1_on_model2_declares_model2s_corpus_then_the_tuning_pairs():
    from shiptwo.checks.provenance import model1_declared_provenance, model2_declared_provenance
    from shiptwo.data.corpus import load_corpus
    from shiptwo.training.recipes import load_model1_recipe

    recipe = load_model1_recipe("smoke")  # base: model2, with sft
    base = model2_declared_provenance("smoke", "Apache-2.0")
    declared = model1_declared_provenance(recipe, "Apache-2.0")
    assert declared["data_license"] == base["data_license"] and declared["license"] == "Apache-2.0"
    assert declared["data_source"] == (f"{base['data_source']}; instruction pairs mined from "
                                       f"{load_corpus(recipe.sft.corpus).data_source}")
