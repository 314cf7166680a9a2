"""MFU's arithmetic (no timings): PaLM's 6·N + 12·L·d·T with N the parameters the matmuls of the
live model use, the causal half of attention counted apart, and a round's rate its sustained one."""

from __future__ import annotations

import dataclasses

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.limits import decode_matrices
from shiptwo.measure.mfu import matmul_parameters, sustained_tokens_per_s, train_flops_per_token
from shiptwo.model.llama import LlamaModel
from shiptwo.training.recipes import load_recipe


@pytest.mark.parametrize("tied", [True, False])
def test_n_is_the_parameters_of_the_live_models_matmuls(tied):
    """6·num_parameters() counted an untied model's input embedding (a lookup) as matmul work: at the
    full profile's sizes (vocab 32000, h1024, untied) 6·32.8M FLOPs a token the step never does."""
    cfg = dataclasses.replace(load_recipe("model2", "default").model, tie_word_embeddings=tied)
    model = LlamaModel(cfg)
    assert matmul_parameters(cfg) == sum(w.numel() for w in decode_matrices(model))  # every Linear, the head once
    embedding = cfg.vocab_size * cfg.hidden_size
    norms = sum(p.numel() for name, p in model.named_parameters() if "norm" in name)
    assert matmul_parameters(cfg) == cfg.num_parameters() - norms - (0 if tied else embedding)


def test_palms_count_and_the_causal_half():
    cfg = load_recipe("model2", "default").model  # 1.0M parameters, 4 layers of 128, seq 256
    T, n = 256, matmul_parameters(cfg)
    assert train_flops_per_token(cfg, T) == 6 * n + 12 * 4 * 128 * T
    assert train_flops_per_token(cfg, T, causal=True) == 6 * n + 6 * 4 * 128 * T
    # at this size the skipped half is ~10 % of PaLM's count: 66 % MFU by it is ~59 % of work done
    assert train_flops_per_token(cfg, T, causal=True) / train_flops_per_token(cfg, T) == pytest.approx(0.896, abs=1e-3)


def _log(rates, timed=1):
    return [{"type": "train", "step": i + 1, "tokens": 4096 * (i + 1), "tokens_per_s": r, "timed_steps": timed}
            for i, r in enumerate(rates)] + [{"type": "val", "step": len(rates), "val_loss": 1.0}]


def test_a_rounds_rate_is_what_its_steps_sustained_not_the_median_step():
    """The median step's rate (the upper of two middles) hid a slow step: here 100 tok/s for 5 steps,
    one of which took 10x as long; the run sustained 6 steps' tokens in 14 steps' time at 100."""
    log = _log([5.0, 50.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 10.0, 100.0])
    assert sustained_tokens_per_s(log, after_step=4) == pytest.approx(6 / (5 / 100 + 1 / 10))
    assert sustained_tokens_per_s(_log([100.0] * 8, timed=4), after_step=4) == pytest.approx(100.0)  # read in groups
    with pytest.raises(ShiptwoError, match="no timed step after step 10"):
        sustained_tokens_per_s(log, after_step=10)
    with pytest.raises(ShiptwoError, match="no timed step after step 4"):
        sustained_tokens_per_s(_log([100.0] * 5 + [None]), after_step=4)
