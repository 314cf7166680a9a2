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
from shiptwo.training.loop import token_loss

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


def test_humaneval_references_are_committed_files():
    from shiptwo.measure.evals.humaneval import read_reference
    from shiptwo.training.recipes import load_sft_recipe

    for profile in ("smoke", "default"):
        ref = read_reference(load_sft_recipe(profile).humaneval_reference)
        assert 0.0 <= ref["pass@1"] <= 100.0 and ref["n_problems"] > 0
    assert load_sft_recipe("full").humaneval_reference is None


def test_second_build_is_reused(model1_smoke):
    from shiptwo.builds.registry import build

    again = build("model1", "smoke")
    assert again.reused and again.key == model1_smoke.key


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

    with pytest.raises(ShiptwoError, match="no such directory or checkpoint"):
        build("model1", "smoke", base=str(tmp_path / "missing"))
