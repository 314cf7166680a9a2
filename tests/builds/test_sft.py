"""MODEL-1's build through the artifact store: instruction tuning from MODEL-2 (or a user's own
Hugging Face model), masked loss, chat template embedded, release formats written and verified."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from shiptwo.data.chat import CHAT_SPECIAL_TOKENS, END_OF_TURN_TOKEN
from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.training.objective import token_loss

from shiptwo.formats.hf import HF_CONFIG_FILE, HF_WEIGHTS_FILE
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE
from shiptwo.paths import ARTIFACT_ROOT_ENV


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    mp.setenv(ARTIFACT_ROOT_ENV, str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def model1_smoke(store):
    from shiptwo.builds.registry import build

    return build("model1", "smoke")


def test_model1_is_a_chat_finetune_of_model2(model1_smoke):
    from shiptwo.builds.registry import build

    base = load_checkpoint(build("model2", "smoke").checkpoint)
    ckpt = load_checkpoint(model1_smoke.checkpoint)
    tok = ckpt.tokenizer()
    assert ckpt.chat_template and all(len(tok.encode(t)) == 1 for t in CHAT_SPECIAL_TOKENS)
    assert ckpt.config.vocab_size == base.config.vocab_size + len(CHAT_SPECIAL_TOKENS)
    assert ckpt.config.eos_token_id == tok.token_to_id(END_OF_TURN_TOKEN)
    s = model1_smoke.summary
    assert s["objective"] == "finetune" and s["chinchilla_gate"].startswith("not applicable")
    assert s["sft_data"]["base"]["base"] == "model2" and s["sft_data"]["train_pairs"] > 0
    assert 0 < s["sft_data"]["train_supervised_tokens"] < s["sft_data"]["train_tokens"]
    assert ckpt.provenance[META_LICENSE] == base.provenance[META_LICENSE]
    # it trained: the weights moved away from the base
    assert not torch.equal(ckpt.tensors["model.norm.weight"], base.tensors["model.norm.weight"])


def test_model1_release_formats_are_written_and_verify(model1_smoke):
    from shiptwo.formats.release import verify

    files = model1_smoke.files
    assert (files["hf_config"].parent / HF_WEIGHTS_FILE).is_file()
    assert files["gguf_q8_0"].stat().st_size > 0
    assert verify(files["release_manifest"].parent) == []


def test_recipes_name_their_base_and_reference():
    from shiptwo.checks.reproduction import read_upstream_reference
    from shiptwo.training.recipes import PackagedBase, load_model1_recipe

    smoke, default = load_model1_recipe("smoke"), load_model1_recipe("default")
    assert smoke.base == "model2" and smoke.sft is not None and smoke.humaneval_reference is None
    assert isinstance(default.base, PackagedBase) and default.sft is None and default.quantized == ("q8_0", "q4_k_m")
    ref = read_upstream_reference(default.humaneval_reference)  # committed, per problem
    assert len(ref["problems"]) == 164 and ref["upstream"]["sha256"] == default.base.sha256
    assert default.base.locate().name == default.base.file  # installed by make venv, SHA-256 verified


def test_a_packaged_base_with_another_sha256_is_refused():
    import dataclasses

    from shiptwo.training.recipes import load_model1_recipe

    base = dataclasses.replace(load_model1_recipe("default").base, sha256="0" * 64)
    with pytest.raises(ShiptwoError, match="SHA-256 .* differs from the recipe's 0000"):
        base.locate()


def test_second_build_is_reused(model1_smoke):
    from shiptwo.builds.registry import build

    again = build("model1", "smoke")
    assert again.reused and again.key == model1_smoke.key


def test_a_model1_set_shrunk_of_a_quantized_format_is_not_reused(model1_smoke, store, tmp_path, monkeypatch):
    """A GGUF dropped with its manifest entry and role: the set verified and was reused as complete.
    MODEL-1 declares one gguf_<type> role per quantized type of its recipe; a copy of the store is edited."""
    from shiptwo.builds.registry import build
    from shiptwo.builds.store import ARTIFACT_MANIFEST

    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(shutil.copytree(store, tmp_path / "store")))
    root = tmp_path / "store" / model1_smoke.root.relative_to(store)
    manifest = json.loads((root / ARTIFACT_MANIFEST).read_text())
    rel = manifest["roles"].pop("gguf_q8_0")
    del manifest["files"][rel]
    (root / rel).unlink()
    (root / ARTIFACT_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShiptwoError, match=r"manifest\.json: records no gguf_q8_0 role, which its builder declares .*--rebuild"):
        build("model1", "smoke")


def test_masked_loss_counts_only_supervised_targets():
    logits = torch.randn(1, 4, 10)
    y = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1]])
    assert torch.allclose(token_loss(logits, y, mask), token_loss(logits[:, 2:], y[:, 2:], None))
    assert not torch.allclose(token_loss(logits, y, mask), token_loss(logits, y, None))


def test_model1_from_a_users_hugging_face_model(store, transformers_dir, tmp_path):
    from shiptwo.builds.registry import build

    own = tmp_path / "my-llama"
    shutil.copytree(transformers_dir, own)
    cfg = json.loads((own / HF_CONFIG_FILE).read_text())
    cfg.update({META_LICENSE: "MIT", META_DATA_SOURCE: "my data", META_DATA_LICENSE: "CC-BY-4.0"})
    (own / HF_CONFIG_FILE).write_text(json.dumps(cfg))
    art = build("model1", "smoke", base=str(own))
    ckpt = load_checkpoint(art.checkpoint)
    assert art.summary["sft_data"]["base"]["base"] == str(own.resolve())
    assert ckpt.config.vocab_size == cfg["vocab_size"] + len(CHAT_SPECIAL_TOKENS)
    assert not ckpt.config.tie_word_embeddings and ckpt.provenance[META_DATA_LICENSE] == "CC-BY-4.0"


def test_unknown_base_is_refused(store, tmp_path):
    from shiptwo.builds.registry import build

    with pytest.raises(ShiptwoError, match="no such directory, checkpoint or GGUF file"):
        build("model1", "smoke", base=str(tmp_path / "missing"))


def test_model1_from_a_gguf_base(store, tmp_path, tiny_checkpoint):
    from shiptwo.builds.registry import build
    from shiptwo.formats.gguf_export import export_gguf

    gguf = export_gguf(load_checkpoint(tiny_checkpoint), tmp_path / "base-q8_0.gguf", "q8_0")
    art = build("model1", "smoke", base=str(gguf))
    assert art.summary["sft_data"]["base"]["base"] == str(gguf.resolve())
    assert load_checkpoint(art.checkpoint).chat_template


def test_a_packaged_base_ships_through_the_release_path(tmp_path, tiny_checkpoint, monkeypatch):
    """The default recipe's path on a tiny stand-in: a GGUF inside an installed package, pinned by
    SHA-256, imported with the recipe's provenance, released as HF + Q8_0 (ours) + Q4_K_M (llama.cpp's)."""
    import dataclasses

    from shiptwo.builds.model1 import BUILDER, _model1_run
    from shiptwo.builds.store import Fingerprint
    from shiptwo.fileio import sha256_file
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.gguf_load import provenance_of, read_gguf, tensor_types
    from shiptwo.formats.release import verify
    from shiptwo.training.recipes import load_model1_recipe

    pkg = tmp_path / "site" / "shiptwo_tiny_upstream"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    gguf = export_gguf(load_checkpoint(tiny_checkpoint), pkg / "tiny.Q8_0.gguf", "q8_0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    recipe = load_model1_recipe("default")
    recipe.base = dataclasses.replace(recipe.base, package="shiptwo_tiny_upstream", file=gguf.name, sha256=sha256_file(gguf))
    work = tmp_path / "work"
    work.mkdir()
    fp = Fingerprint({"code": "test"}, (recipe, None))
    roles, _, summary = _model1_run("default", fp, work)
    assert set(roles) == BUILDER.roles("default", fp) and {"gguf_q8_0", "gguf_q4_k_m"} <= set(roles)  # what it declares
    assert summary["objective"] == "import" and summary["base"]["sha256"] == sha256_file(gguf)
    ckpt = load_checkpoint(work / roles["checkpoint"])
    assert ckpt.provenance["license"] == "Apache-2.0" and "HuggingFaceTB" in ckpt.provenance[META_DATA_SOURCE]
    q4 = work / roles["gguf_q4_k_m"]
    assert provenance_of(read_gguf(q4)) == ckpt.provenance  # llama.cpp's quantizer kept our keys
    assert set(tensor_types(work / roles["gguf_q8_0"]).values()) <= {"Q8_0", "F32", "F16"}
    assert set(tensor_types(q4).values()) - {"F32"}  # llama.cpp picked its types (fallbacks for 64-wide rows)
    assert verify(work / "release") == []
