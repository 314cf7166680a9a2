"""The per-step training records, read from the device in batches so the host never waits on it
inside a run of steps (issue 14: no per-step host syncs).

Reading a loss (`float(loss)`) makes the host wait until the device has finished every queued
kernel. A CPU runs each op to completion before it returns, so there it costs nothing and every
step is read at once; an accelerator's losses stay on it and are read together every
`SYNC_INTERVAL` steps, and whenever the run needs them (an evaluation, a checkpoint, the stop).
A step's rate is then the rate over the steps read together (`timed_steps` in its record): the
only honest figure, since the host's clock cannot see where one queued step ended.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from shiptwo.errors import ShiptwoError

SYNC_INTERVAL = 16  # accelerator steps between reads; the first step (compile, warm-up) is read alone


def sync_interval(device: torch.device) -> int:
    """Steps read from `device` together: 1 on a CPU (nothing is queued), else SYNC_INTERVAL."""
    return 1 if device.type == "cpu" else SYNC_INTERVAL


@dataclass
class StepLog:
    """Collects each step's loss tensor with its host-side facts; `flush` reads them all with one
    device sync, refuses a non-finite loss (naming its step and lr), and appends the records."""

    tokens_per_step: int
    interval: int
    records: list[dict]  # the run's log (train and val entries), appended to in step order
    losses: list[float]
    on_flush: Callable[[int, float, float], None] = lambda steps, loss, tok_s: None  # progress display
    _pending: list[tuple[torch.Tensor, dict]] = field(default_factory=list)
    _since: float | None = None  # host clock at the start of the first pending step

    def start_step(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def add(self, loss: torch.Tensor, record: dict) -> None:
        """One finished step: its loss (still on the device) and its record without loss and rate."""
        self._pending.append((loss.detach(), record))
        step = record["step"]
        if len(self._pending) >= self.interval or step == 1 or step % self.interval == 0:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        values = torch.stack([loss.float() for loss, _ in self._pending]).tolist()  # the one sync
        dt = time.perf_counter() - self._since
        rate = self.tokens_per_step * len(values) / dt if dt > 0 else None
        for value, (_, record) in zip(values, self._pending):
            if not math.isfinite(value):
                raise ShiptwoError(f"train: loss became {value} at step {record['step'] - 1} (lr {record['lr']:.3g}); "
                                   "lower lr or check data")
            self.losses.append(value)
            self.records.append({**record, "loss": value, "tokens_per_s": rate, "timed_steps": len(values)})
        self.on_flush(len(values), values[-1], rate or 0.0)
        self._pending, self._since = [], None
