"""Training windows: sequential seq_len+1 token windows in a seeded shuffled order per epoch.

Crossing the end of the data starts a new epoch that is logged and recorded: a corpus that runs
out is never silently padded or wrapped (background, lesson 3).
"""

from __future__ import annotations

import logging

import torch

from shiptwo.errors import ShiptwoError

log = logging.getLogger(__name__)


def window_count(n_tokens: int, seq_len: int) -> int:
    """Windows of seq_len+1 tokens (overlapping by one) that `n_tokens` yield: one epoch of the sampler."""
    return (n_tokens - 1) // seq_len


class WindowSampler:
    """Sequential windows of seq_len+1 tokens, in a seeded shuffled order per epoch; wraps recorded."""

    def __init__(self, n_tokens: int, seq_len: int, seed: int):
        self.n_windows = window_count(n_tokens, seq_len)
        if self.n_windows < 1:
            raise ShiptwoError(f"train: train split has {n_tokens} tokens, fewer than seq_len+1 = {seq_len + 1}")
        self.seed, self.epoch, self.cursor = seed, 0, 0
        self.consumed = 0
        self.wraps: list[dict] = []
        self._perm = self._order(0)

    def _order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_windows, generator=gen)

    def take(self, k: int, step: int) -> list[int]:
        """The next k window indices; crossing the end of the data starts a new epoch, logged and recorded."""
        out = []
        for _ in range(k):
            if self.cursor == self.n_windows:
                self.epoch += 1
                self.cursor = 0
                self._perm = self._order(self.epoch)
                self.wraps.append({"step": step, "epoch": self.epoch, "windows_consumed": self.consumed})
                msg = f"corpus exhausted at step {step}: starting epoch {self.epoch} (pass {self.epoch + 1} over the data)"
                log.warning(msg)  # the CLI routes warnings to stderr; a library user's logging decides
            out.append(int(self._perm[self.cursor]))
            self.cursor += 1
            self.consumed += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "consumed": self.consumed, "wraps": list(self.wraps)}

    def restore(self, s: dict) -> None:
        self.epoch, self.cursor, self.consumed = s["epoch"], s["cursor"], s["consumed"]
        self.wraps = list(s["wraps"])
        self._perm = self._order(self.epoch)
