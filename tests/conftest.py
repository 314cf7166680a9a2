"""Shared fixtures: tiny but real artifacts (a trained BPE tokenizer, a saved checkpoint)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from shiptwo.model.tokenizer import EOT_TOKEN

pytest_plugins = ["pytester"]

# Hypothesis judges each example on the wall clock (a 200 ms deadline, a "too slow" health check): a
# loaded or stalled CI machine (steal time, a neighbour's spinners) failed a property that held. The
# properties are about values; timing is judged in benchmarks/ and the sandbox tests.
settings.register_profile("shiptwo", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shiptwo")

TINY_SOURCES = ("textwrap.py", "string.py", "bisect.py", "heapq.py", "colorsys.py", "keyword.py", "shlex.py", "fnmatch.py")
TINY_PROVENANCE = {
    "license": "Apache-2.0",
    "data_source": "python-stdlib test subset",
    "data_license": "PSF-2.0",
}


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    """A handful of real Python sources from the running interpreter's standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(stdlib / name).read_text(encoding="utf-8") for name in TINY_SOURCES]


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_texts):
    from shiptwo.model.tokenizer import train_tokenizer

    return train_tokenizer(tiny_texts, vocab_size=384)


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    from shiptwo.model.config import ModelConfig

    return ModelConfig(
        vocab_size=tiny_tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tiny_tokenizer.eot_id,
        eos_token_id=tiny_tokenizer.eot_id,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config, tiny_tokenizer) -> Path:
    """A randomly initialised (untrained) tiny checkpoint on disk: for format and contract tests."""
    from shiptwo.model.checkpoint import checkpoint_from_model, save_checkpoint
    from shiptwo.model.llama import LlamaModel

    model = LlamaModel(tiny_config)
    model.init_weights(seed=0)
    ckpt = checkpoint_from_model(model, tiny_tokenizer.to_json(), TINY_PROVENANCE, training={"steps": 0})
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("tiny") / "model.safetensors")


# --- exports (issue 4): a checkpoint whose logits expose layout errors, and its GGUF ---------

SHARP_QK_SCALE = 10.0  # peaked attention: a wrong Q/K layout moves the logits far beyond 1e-3
SHARP_EMBED_SCALE = 25.0  # logits of order 1 instead of 1e-2


@pytest.fixture(scope="session")
def sharp_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny checkpoint with Q/K and embeddings scaled up: random-init attention is nearly
    uniform, so a layout defect would barely move its logits; this one's would not."""
    from shiptwo.model.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    for name, t in ckpt.tensors.items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            ckpt.tensors[name] = t * SHARP_QK_SCALE
        elif name == "model.embed_tokens.weight":
            ckpt.tensors[name] = t * SHARP_EMBED_SCALE
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("sharp") / "model.safetensors")


@pytest.fixture(scope="session")
def sharp_gguf_f32(tmp_path_factory, sharp_checkpoint) -> Path:
    from shiptwo.model.checkpoint import load_checkpoint
    from shiptwo.formats.gguf_export import export_gguf

    return export_gguf(load_checkpoint(sharp_checkpoint), tmp_path_factory.mktemp("gguf") / "sharp-f32.gguf", "f32")


@pytest.fixture(scope="session")
def transformers_dir(tmp_path_factory, tiny_tokenizer):
    """A directory written by transformers itself (untied head), tokenizer via PreTrainedTokenizerFast."""
    import torch
    import transformers


    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=tiny_tokenizer.eot_id, eos_token_id=tiny_tokenizer.eot_id,
    )
    d = tmp_path_factory.mktemp("tf") / "llama"
    transformers.LlamaForCausalLM(config).eval().save_pretrained(d)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.tok, eos_token=EOT_TOKEN)
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    fast.save_pretrained(d)
    return d
