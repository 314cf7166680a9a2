"""The training objective: next-token cross-entropy (optionally masked) and its evaluation on a split."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from shiptwo.errors import ShiptwoError
from shiptwo.model.llama import LlamaModel


def token_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy; with a `mask` (1 = supervised target) only those targets count."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    if mask is None:
        return ce.mean() if reduction == "mean" else ce.sum()
    m = mask.reshape(-1).to(ce.dtype)
    total = (ce * m).sum()
    return total / m.sum().clamp(min=1) if reduction == "mean" else total


@torch.no_grad()
def evaluate_loss(model: LlamaModel, tokens: torch.Tensor, seq_len: int, batch: int, max_windows: int | None = None,
                  mask: torch.Tensor | None = None) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of `tokens` (1-D int tensor),
    counting only targets where `mask` is 1 when a mask is given (fine-tuning: the assistant's turn)."""
    n = (len(tokens) - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ShiptwoError(f"eval: {len(tokens)} tokens are fewer than seq_len+1 = {seq_len + 1}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, n, batch):
        idx = range(start, min(n, start + batch))
        x, y = windows(tokens, list(idx), seq_len, device)
        m = windows(mask, list(idx), seq_len, device)[1] if mask is not None else None
        with autocast(device):
            logits = model(x)
        total += token_loss(logits, y, m, reduction="sum").item()
        count += y.numel() if m is None else int(m.sum())
    model.train(was_training)
    return total / count


def windows(tokens: torch.Tensor, idx: list[int], seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in idx]).long()
    rows = rows.to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

