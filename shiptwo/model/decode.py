"""Decoding state for up to `slots` independent sequences: one KV cache whose rows are slots,
each prompt prefilled on its own, then one token per live sequence per step, all stepped together.

A step runs the compiled kernel (kernels.c) when it can and torch ops otherwise (the reason is
logged). Both give each sequence exactly what it would get decoded alone: prefill is per prompt,
the kernel is batch-invariant by construction, and the torch path steps each sequence by itself.
"""

from __future__ import annotations

import logging

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.model import kernels
from shiptwo.model.llama import KVCache, LlamaModel

log = logging.getLogger(__name__)
_warned: set[str] = set()


def engine(model: LlamaModel) -> str:
    """Which implementation decodes this model: "kernel" with the steps taken on each thread
    count so far, or "torch (reason)"."""
    if kernels.load() is None:
        return "torch (kernels unavailable)"
    why = kernels.unsuitable(model)
    if why is not None:
        return f"torch ({why})"
    used = kernels.pacer_of(model).used
    return "kernel" + (f", steps by threads {dict(sorted(used.items()))}" if used else "")


class Decoder:
    def __init__(self, model: LlamaModel, slots: int, capacity: int):
        param = next(model.parameters())
        self.model = model
        self.cache = KVCache(model.config, slots, capacity, param.device, param.dtype)
        self.lengths = [0] * slots  # tokens cached per slot
        self.kernel = None
        lib = kernels.load()
        if lib is not None:
            why = kernels.unsuitable(model)
            if why is None:
                self.kernel = kernels.DecodeKernel(lib, model, self.cache.k, self.cache.v)
            elif why not in _warned:
                _warned.add(why)
                log.warning("decode kernels not used for this model (%s); decoding with torch ops (slower)", why)

    @property
    def path(self) -> str:
        """Which implementation steps: recorded by the benchmarks next to their figures."""
        return "kernel" if self.kernel is not None else "torch"

    @torch.inference_mode()
    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        """Cache the prompt `ids` in `slot` (replacing what it held); logits (vocab,) of its last position."""
        view = self.cache.row(slot)
        hidden = self.model.hidden(torch.tensor([ids], device=self.cache.k.device), view)
        self.lengths[slot] = len(ids)
        return self.model.lm_head(hidden[0, -1])

    @torch.inference_mode()
    def step(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """Feed tokens[j] to the sequence in slots[j]; logits (len(slots), vocab) of each, valid
        until the next step (the kernel reuses its buffer)."""
        full = [s for s in slots if self.lengths[s] >= self.cache.max_len]
        if full:
            raise ShiptwoError(f"decode: slot {full[0]} is full ({self.cache.max_len} tokens cached)")
        if self.kernel is not None:
            positions = torch.tensor([self.lengths[s] for s in slots])
            logits = self.kernel.step(torch.tensor(tokens), positions, torch.tensor(slots))
        else:
            rows = []
            for s, token in zip(slots, tokens):
                view = self.cache.row(s)
                view.length = self.lengths[s]
                rows.append(self.model(torch.tensor([[token]], device=self.cache.k.device), view)[0, -1])
            logits = torch.stack(rows)
        for s in slots:
            self.lengths[s] += 1
        return logits
