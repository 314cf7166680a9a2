"""The training objective: next-token cross-entropy (optionally masked), its evaluation on a split,
and the (optionally compiled) forward the trainer differentiates."""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F

from shiptwo.errors import ShiptwoError
from shiptwo.model import train_kernels
from shiptwo.model.llama import LlamaModel

log = logging.getLogger(__name__)


def token_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy; with a `mask` (1 = supervised target) only those targets count."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    if mask is None:
        return ce.mean() if reduction == "mean" else ce.sum()
    m = mask.reshape(-1).to(ce.dtype)
    total = (ce * m).sum()
    return total / m.sum().clamp(min=1) if reduction == "mean" else total


def evaluate_loss(model: LlamaModel, tokens: torch.Tensor, seq_len: int, batch: int, max_windows: int | None = None,
                  mask: torch.Tensor | None = None) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of `tokens` (1-D int tensor),
    counting only targets where `mask` is 1 when a mask is given (fine-tuning: the assistant's turn)."""
    sums, counts = window_losses(model, tokens, seq_len, batch, max_windows, mask)
    return sum(sums) / max(1, sum(counts))


@torch.no_grad()
def window_losses(model: LlamaModel, tokens: torch.Tensor, seq_len: int, batch: int, max_windows: int | None = None,
                  mask: torch.Tensor | None = None) -> tuple[list[float], list[int]]:
    """Per window: the summed cross-entropy (nats) and the number of targets counted. Windows are
    the unit a bootstrap resamples: tokens within one are correlated, windows far less."""
    n = (len(tokens) - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ShiptwoError(f"eval: {len(tokens)} tokens are fewer than seq_len+1 = {seq_len + 1}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums, counts = [], []
    for start in range(0, n, batch):
        idx = range(start, min(n, start + batch))
        x, y = windows(tokens, list(idx), seq_len, device)
        m = windows(mask, list(idx), seq_len, device)[1] if mask is not None else None
        with autocast(device):
            logits = model(x)
        ce = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (windows, seq_len)
        if m is not None:
            ce = ce * m.to(ce.dtype)
        sums += ce.sum(1).tolist()
        counts += ([y.shape[1]] * len(idx)) if m is None else m.sum(1).tolist()
    model.train(was_training)
    return sums, [int(c) for c in counts]


def windows(tokens: torch.Tensor, idx: list[int], seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in idx]).long()
    if torch.device(device).type == "cuda":  # an asynchronous copy needs page-locked memory; else the host waits
        rows = rows.pin_memory()
    rows = rows.to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()



class TrainingLoss:
    """`token_loss(module(x), y, mask)`, through torch.compile when `enabled` (inductor, built with
    the machine's C++ compiler). On a CPU in float32 the head and its cross-entropy run as one
    compiled kernel (`train_kernels.linear_cross_entropy`: the (tokens, vocab) logits stay in
    cache, block by block); elsewhere the loss is compiled with the forward, so the log-softmax
    fuses with the head. A compile that fails on the first call is logged and recorded in
    `status`, and the eager path runs from then on; numerics differ from eager only by float
    reassociation."""

    def __init__(self, module: torch.nn.Module, enabled: bool):
        self.module = module
        self.head = getattr(module, "module", module).lm_head  # under DDP, the wrapped model's
        on_cpu = next(self.head.parameters()).device.type == "cpu"
        # On a CPU, inductor's C++ wrapper instead of its Python one: the step's few hundred kernel
        # calls and allocations leave the interpreter (~3 % less time a step at the default profile,
        # A/B in one process; ~10 s more compiling, once: inductor caches it).
        self.compiled = torch.compile(self._eager, options={"cpp_wrapper": True} if on_cpu else None) if enabled else None
        self.status = "inductor" if enabled else "off"
        self._proven = False

    def _eager(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.module(x, head=False)
        if not train_kernels.blas_usable(h):
            return token_loss(self.head(h), y, mask)
        n = y.numel()
        w = (torch.full((n,), 1.0 / n) if mask is None  # the mean, or the mean over supervised targets
             else (m := mask.reshape(-1).to(h.dtype)) / m.sum().clamp(min=1))
        return train_kernels.linear_cross_entropy(h.reshape(n, -1), self.head.weight, y.reshape(-1), w)[0]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.compiled is None:
            return self._eager(x, y, mask)
        if self._proven:
            return self.compiled(x, y, mask)
        try:
            out = self.compiled(x, y, mask)
        except Exception as exc:  # any backend failure: the eager path computes the same function
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("torch.compile failed (%s); training eager (slower)", reason[:200])
            self.compiled, self.status = None, f"failed, eager: {reason[:200]}"
            return self._eager(x, y, mask)
        self._proven = True
        return out
