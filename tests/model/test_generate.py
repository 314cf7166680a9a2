"""Generation: the KV cache matches a full recompute, batches match single prompts, sampling is
seeded, stop sequences and EOS end a completion, bad requests are one clear error."""

from __future__ import annotations

import pytest
import torch

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.model.generate import (
    FINISH_EOS, FINISH_LENGTH, FINISH_STOP, SamplingConfig, generate, generate_batch, generate_ids, stop_at_strings,
)

PROMPTS = ["def f(x):\n", "import os\n\n\nclass Foo(object):\n    def bar(self):\n", "x = 1", "for i in range(10):\n"]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    return ckpt.build_model(), ckpt.tokenizer()


@torch.inference_mode()
def _greedy_without_cache(model, ids, n):
    ids = list(ids)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


def test_cached_greedy_equals_full_recompute(loaded):
    model, tok = loaded
    ids = tok.encode(PROMPTS[1])
    out = generate_ids(model, ids, SamplingConfig(max_new_tokens=24))
    assert len(out) == 24
    assert ids + out == _greedy_without_cache(model, ids, 24)


@torch.inference_mode()
def test_padding_mask_gives_unpadded_logits(loaded):
    model, tok = loaded
    rows = [tok.encode(p) for p in PROMPTS]
    width = max(map(len, rows)) + 3
    for r in rows:
        ref = model(torch.tensor([r]))[0, -1]
        pad = width - len(r)
        got = model(torch.tensor([[0] * pad + r]), None, torch.tensor([[0] * pad + [1] * len(r)]))[0, -1]
        assert torch.allclose(ref, got, atol=1e-5)
    with pytest.raises(ShiptwoError, match="attention_mask"):
        model(torch.tensor([rows[0]]), None, torch.ones(1, len(rows[0]) + 1))


def test_sampling_is_seeded(loaded):
    model, tok = loaded
    ids = tok.encode(PROMPTS[0])
    cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=7)
    a, b = generate_ids(model, ids, cfg), generate_ids(model, ids, cfg)
    c = generate_ids(model, ids, SamplingConfig(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=8))
    assert a == b and a != c
    greedy = generate_ids(model, ids, SamplingConfig(max_new_tokens=30))
    assert generate_ids(model, ids, SamplingConfig(max_new_tokens=30, temperature=1.0, top_k=1, seed=3)) == greedy


def test_stop_sequence_trims_the_completion(loaded):
    model, tok = loaded
    full = generate(model, tok, PROMPTS[0], SamplingConfig(max_new_tokens=40))
    assert full.finish_reason == FINISH_LENGTH and len(full.token_ids) == 40
    stop = full.text[5:8]
    cut = generate(model, tok, PROMPTS[0], SamplingConfig(max_new_tokens=40, stop=(stop,)))
    assert cut.finish_reason == FINISH_STOP
    assert cut.text == full.text[: full.text.find(stop)] and stop not in cut.text
    assert stop_at_strings(["ab", "c"])("xxcab") == 2 and stop_at_strings(["q"])("abc") is None


def test_eos_ends_generation(loaded, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.tensors["model.norm.weight"] = torch.zeros_like(ckpt.tensors["model.norm.weight"])  # all logits 0: argmax is id 0
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    assert tok.eot_id == 0
    res = generate(model, tok, PROMPTS[0], SamplingConfig(max_new_tokens=10))
    assert res.finish_reason == FINISH_EOS and res.text == "" and res.token_ids == []
    assert generate_ids(model, tok.encode(PROMPTS[0]), SamplingConfig(max_new_tokens=10), eos_id=0) == [0]


def test_bad_requests_are_clear_errors(loaded):
    model, tok = loaded
    with pytest.raises(ShiptwoError, match="max_position_embeddings"):
        generate_ids(model, [1] * model.config.max_position_embeddings, SamplingConfig())
    with pytest.raises(ShiptwoError, match="at least one token"):
        generate(model, tok, "", SamplingConfig())
    with pytest.raises(ShiptwoError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ShiptwoError, match="temperature"):
        SamplingConfig(temperature=-1)


def test_generation_stops_at_the_context_limit(loaded):
    model, tok = loaded
    limit = model.config.max_position_embeddings
    out = generate_ids(model, [5] * (limit - 3), SamplingConfig(max_new_tokens=50))
    assert len(out) == 3


def test_cli_run_prints_prompt_and_completion(tiny_checkpoint, capsys):
    assert main(["run", str(tiny_checkpoint), "--prompt", "def fib(n):", "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("def fib(n):")
    assert main(["run", str(tiny_checkpoint) + ".missing", "--prompt", "x"]) == 2
    assert "missing" in capsys.readouterr().err


def test_inference_weights_follow_in_place_updates(tiny_checkpoint):
    """The pre-transposed weights used under inference mode are rebuilt when training changes a weight."""
    model = load_checkpoint(tiny_checkpoint).build_model()
    x = torch.tensor([[3, 4, 5, 6]])
    for _ in range(2):
        with torch.inference_mode():
            fast = model(x)
        with torch.no_grad():
            slow = model(x)
            model.model.layers[0].self_attn.q_proj.weight.mul_(1.5)  # an optimizer step does the same
            model.model.layers[1].mlp.up_proj.weight.add_(0.01)
            model.model.embed_tokens.weight.mul_(0.9)
        assert torch.allclose(fast, slow, atol=1e-5)
    moved = model.to(torch.float64)  # new storage: rebuilt again, in the new dtype
    with torch.inference_mode():
        assert moved(x).dtype == torch.float64


def test_context_limit_is_reported_not_silent(tiny_checkpoint):
    from shiptwo.model.checkpoint import load_checkpoint
    from shiptwo.model.generate import FINISH_CONTEXT

    ckpt = load_checkpoint(tiny_checkpoint)
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    prompt = [1] * (ckpt.config.max_position_embeddings - 5)
    out = generate_batch(model, tok, [prompt], SamplingConfig(max_new_tokens=50))[0]
    assert out.finish_reason == FINISH_CONTEXT and len(out.token_ids) == 5
