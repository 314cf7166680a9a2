"""What the hardware allows, measured in the same run as the figures it bounds: read bandwidth,
torch's weight-streaming ceiling, the fp32 matmul peak; and anonymous resident memory.

Each probe returns one sample; the benchmark takes one per round, between the runtimes' runs,
so a limit and the figures compared with it see the same load on a shared machine.
"""

from __future__ import annotations

import contextlib
import threading
import time

import torch
import torch.nn.functional as F

from shiptwo.errors import ShiptwoError


def decode_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every weight matrix one decode step multiplies (the LM head once, tied or not): the bytes
    a batch-1 token must stream."""
    seen, mats = set(), []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.weight.data_ptr() not in seen:
            seen.add(m.weight.data_ptr())
            mats.append(m.weight.detach())
    return mats


BANDWIDTH_ROW = 4096  # elements a row when the array is read as one matrix


def read_bandwidth(data: torch.Tensor) -> float:
    """Bytes/s of reading `data` (1-D, as large as the weights it stands for) once: the faster of a
    sum and a matrix-vector product over it viewed as one matrix. Either alone under-reads on some
    machines (measured on this project's 2-core host: sum ~17 GB/s, gemv ~25 GB/s over 538 MB),
    and a roofline drawn from an under-read says a runtime beats the hardware."""
    n = data.numel() - data.numel() % BANDWIDTH_ROW
    matrix, ones = data[:n].view(-1, BANDWIDTH_ROW), torch.ones(BANDWIDTH_ROW, dtype=data.dtype)
    best = 0.0
    for read in (data.sum, lambda: matrix @ ones):
        t = time.perf_counter()
        read()
        best = max(best, data.numel() * data.element_size() / (time.perf_counter() - t))
    return best


class WeightStream:
    """Every decode matrix through torch's matrix-vector product, as stored (out, in) and as a
    contiguous transposed copy (in, out): one pass per sample, tok/s of a decode that did nothing else."""

    def __init__(self, mats: list[torch.Tensor]):
        self.mats = mats
        self.transposed = [w.t().contiguous() for w in mats]
        self.inputs = [torch.randn(1, w.shape[1], dtype=w.dtype) for w in mats]
        self.bytes = sum(w.numel() * w.element_size() for w in mats)

    @torch.inference_mode()
    def stored(self) -> float:
        t = time.perf_counter()
        for w, x in zip(self.mats, self.inputs):
            F.linear(x, w)
        return 1.0 / (time.perf_counter() - t)

    @torch.inference_mode()
    def transposed_layout(self) -> float:
        t = time.perf_counter()
        for w, x in zip(self.transposed, self.inputs):
            x @ w
        return 1.0 / (time.perf_counter() - t)


def matmul_peak(n: int = 2048, repeats: int = 2, device: str = "cpu") -> float:
    """Best-of fp32 FLOP/s of an n x n matmul (the peer of prefill and training throughput)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def anon_rss_bytes() -> int:
    """Anonymous (not file-backed) resident memory: what a runtime allocated, not what it mapped."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise ShiptwoError("bench: /proc/self/status has no RssAnon (anonymous memory is measured on Linux only)")


class AnonPeak(contextlib.AbstractContextManager):
    """Samples anonymous RSS every 5 ms while the block runs; `delta` is its peak above the start."""

    def __enter__(self):
        self.start = self.peak = anon_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, anon_rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss_bytes())
        self.end = anon_rss_bytes()
        self.delta = self.peak - self.start
