"""Model FLOP utilization (MFU) of training: the FLOPs a token costs by PaLM's convention
(Chowdhery et al. 2022, appendix B), 6·N + 12·L·d·T, and the sustained rate it is applied to.

N is the parameters that matmuls use: every projection and the head (a tied head once, as its
embedding table); the input embedding of an untied model is a lookup and the norms are not
matmuls, so neither counts. T is the sequence length. 12·L·d·T counts the full T x T attention
scores and values (forward and backward); a causal kernel that skips the masked half (ours does)
executes about half of it, so MFU is also stated with only that half credited (FlashAttention-2's
count for causal attention): the convention's figure credits work that was never done.
"""

from __future__ import annotations

import statistics

from shiptwo.errors import ShiptwoError
from shiptwo.model.config import ModelConfig


def matmul_parameters(cfg: ModelConfig) -> int:
    """N of 6·N: the parameters multiplied as matrices, once per forward (norms and an untied input
    embedding excluded)."""
    h, norms = cfg.hidden_size, (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size
    return cfg.num_parameters() - norms - (0 if cfg.tie_word_embeddings else cfg.vocab_size * h)


def train_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = False) -> float:
    """Training FLOPs a token: PaLM's 6·N + 12·L·d·T, or with causal=True the attention term halved
    (the masked half a causal kernel skips is not credited)."""
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len
    return 6 * matmul_parameters(cfg) + (attention / 2 if causal else attention)


def sustained_tokens_per_s(log: list[dict], after_step: int) -> float:
    """Tokens over seconds of every train step after `after_step` (the compile and warm-up before
    it): the rate a run sustains, slow steps included, where a median step's rate leaves them out.
    Steps hold the same tokens each, so that is the harmonic mean of the steps' logged rates."""
    rates = [e.get("tokens_per_s") for e in log if e.get("type") == "train" and e["step"] > after_step]
    if not rates or not all(rates):
        raise ShiptwoError(f"mfu: the training log has no timed step after step {after_step}")
    return statistics.harmonic_mean(rates)
