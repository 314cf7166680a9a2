"""The compiled kernels: the decode step (kernels.c), bound to one model's weights as a
`DecodeKernel`, and the training kernels (train_kernels.c, bound in train_kernels.py); each built
once per machine with its C compiler and loaded with ctypes.

When a library cannot be used (no compiler, a failed build, or SHIPTWO_KERNELS=0) `compiled()`
says why in a logged warning and returns None, as does `unsuitable()` for weights that are not
contiguous float32 on the CPU; the caller then runs plain torch ops, the slower path, never silently.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
ENV_SWITCH = "SHIPTWO_KERNELS"  # "0" turns the compiled kernels off (benchmarks compare both paths)
CFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")

_i64, _f32p, _i64p = ctypes.c_int64, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64)


class _Layer(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in (
        "input_norm", "wq", "wk", "wv", "wo", "post_norm", "wgate", "wup", "wdown", "k_cache", "v_cache")]


class _Model(ctypes.Structure):
    _fields_ = [*((n, _i64) for n in ("hidden", "inter", "heads", "kv_heads", "head_dim", "vocab", "n_layers", "capacity")),
                ("eps", ctypes.c_float),
                *((n, ctypes.c_void_p) for n in ("embed", "final_norm", "lm_head", "cos", "ssin")),
                ("layers", ctypes.POINTER(_Layer))]


class _Work(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("x", "xn", "qkv", "att", "gate_up", "act", "scores")]


_state: dict = {}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shiptwo" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(cc: str, source_path: Path) -> Path:
    """Compile a C source to a shared library named by what it depends on (source, compiler,
    flags, CPU), atomically, so concurrent test workers never load a half-written file."""
    source = source_path.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(CFLAGS).encode(), _cpu_flags().encode()]))
    out = _cache_dir() / f"{source_path.stem}-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        lib = Path(tmp) / out.name
        subprocess.run([cc, *CFLAGS, str(source_path), "-o", str(lib), "-lm"], capture_output=True, text=True, check=True)
        os.replace(lib, out)
    return out


def compiled(source_path: Path, what: str) -> ctypes.CDLL | None:
    """The library built from `source_path` (once per process); None, with a logged warning naming
    `what` falls back to torch ops, when it is switched off or cannot be built."""
    if source_path in _state:
        return _state[source_path]
    lib = None
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.warning("%s kernels off (%s=0): torch ops instead (slower)", what, ENV_SWITCH)
    elif (cc := os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")) is None:
        log.warning("%s kernels unavailable: no C compiler (cc/gcc) on PATH; torch ops instead (slower)", what)
    else:
        try:
            # torch is imported first, so the library's libgomp resolves to the OpenMP runtime torch
            # already loaded: one thread pool, not two competing ones.
            lib = ctypes.CDLL(str(_build(cc, source_path)))
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            log.warning("%s kernels unavailable: build of %s failed (%s); torch ops instead (slower)", what,
                        source_path.name, detail.strip().splitlines()[-1] if detail.strip() else exc)
    _state[source_path] = lib
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled decode step, built on first use; None (with a logged reason) when unavailable."""
    lib = compiled(SOURCE, "decode")
    if lib is not None and lib.shiptwo_decode_step.argtypes is None:
        lib.shiptwo_decode_step.restype = ctypes.c_int
        lib.shiptwo_decode_step.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_Work), _i64, ctypes.c_void_p,
                                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    return lib


def unsuitable(model) -> str | None:
    """Why the compiled step cannot run this model's weights (None when it can)."""
    if model.config.head_dim > 512:
        return f"head_dim {model.config.head_dim} > 512"
    for name, p in model.named_parameters():
        if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
            return f"parameter {name} is {p.dtype} on {p.device.type}{'' if p.is_contiguous() else ', not contiguous'}"
    return None


Plan = tuple[int, bool]  # (threads, split by sequence)


class _Pacer:
    """Chooses how each step runs among equivalent plans (a team sharing every op, one thread,
    or the threads splitting the sequences) by their measured step times, re-measuring the
    others now and then. Every plan gives identical logits (the kernel ignores the thread count
    and the split), so the choice moves only speed: on a quiet machine a team streams the weights
    fastest; where other jobs preempt a thread, barriers wait for it and fewer of them win."""

    RETRY_EVERY = 32  # steps between re-measurements of a plan not in use

    def __init__(self):
        self.seconds: dict[tuple[int, Plan], float] = {}  # (sequences, plan) -> smoothed step time
        self.steps = 0
        self.used: dict[int, int] = {}  # threads -> steps taken on that many (benchmarks record it)

    def choose(self, n: int, plans: list[Plan]) -> Plan:
        self.steps += 1
        times = {p: self.seconds.get((n, p)) for p in plans}
        untried = [p for p, t in times.items() if t is None]
        if untried:
            return untried[0]
        ranked = sorted(plans, key=times.get)
        return ranked[1] if self.steps % self.RETRY_EVERY == 0 else ranked[0]

    def record(self, n: int, plan: Plan, seconds: float) -> None:
        old = self.seconds.get((n, plan))
        self.seconds[n, plan] = seconds if old is None else 0.7 * old + 0.3 * seconds


_pacers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pacer_of(model) -> _Pacer:
    """The model's pacer, shared by every decode of it, gone with it."""
    if model not in _pacers:
        _pacers[model] = _Pacer()
    return _pacers[model]


class DecodeKernel:
    """The compiled step bound to a model's weights, its rope tables and a slot KV cache
    (k, v: (layers, slots, kv_heads, capacity, head_dim)); scratch sized for all slots."""

    # Below ~2 MiB of weights a layer, barriers cost more than a second thread saves (measured on
    # 2 cores: a 1M-parameter model decodes faster on one); such a model steps on one thread.
    TEAM_MIN_LAYER_BYTES = 2 << 20

    def __init__(self, lib: ctypes.CDLL, model, k_cache: torch.Tensor, v_cache: torch.Tensor):
        cfg = model.config
        slots, capacity = k_cache.shape[1], k_cache.shape[3]
        cos, ssin = (t.squeeze(1).contiguous() for t in model._rope_tables(torch.device("cpu")))
        self._keep = [cos, ssin, k_cache, v_cache]  # everything C points into stays alive with this object
        layers = (_Layer * cfg.num_hidden_layers)()
        for n, (layer, ly) in enumerate(zip(model.model.layers, layers)):
            a, m = layer.self_attn, layer.mlp
            for field, t in (("input_norm", layer.input_layernorm.weight), ("wq", a.q_proj.weight), ("wk", a.k_proj.weight),
                             ("wv", a.v_proj.weight), ("wo", a.o_proj.weight), ("post_norm", layer.post_attention_layernorm.weight),
                             ("wgate", m.gate_proj.weight), ("wup", m.up_proj.weight), ("wdown", m.down_proj.weight),
                             ("k_cache", k_cache[n]), ("v_cache", v_cache[n])):
                setattr(ly, field, t.data_ptr())
        h, i, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
        H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
        self.model = _Model(h, i, H, KV, hd, cfg.vocab_size, cfg.num_hidden_layers, capacity, cfg.rms_norm_eps,
                            model.model.embed_tokens.weight.data_ptr(), model.model.norm.weight.data_ptr(),
                            model.lm_head.weight.data_ptr(), cos.data_ptr(), ssin.data_ptr(),
                            ctypes.cast(layers, ctypes.POINTER(_Layer)))
        sizes = {"x": h, "xn": h, "qkv": (H + 2 * KV) * hd, "att": H * hd, "gate_up": 2 * i, "act": i, "scores": H * capacity}
        bufs = {k: torch.empty(slots, v) for k, v in sizes.items()}
        self.work = _Work(**{k: t.data_ptr() for k, t in bufs.items()})
        self._keep += [layers, bufs]
        self.logits = torch.empty(slots, cfg.vocab_size)
        self.lib = lib
        self.layer_bytes = 4 * (h * (H + 2 * KV) * hd + H * hd * h + 3 * h * i)
        self.pacer = pacer_of(model)

    def _plans(self, n: int) -> list[Plan]:
        """The ways to run a step of n sequences: one thread for a small model; else the team
        sharing each op, or one thread (few sequences), or the team split by sequence (>= 4 each)."""
        team = torch.get_num_threads()
        if team == 1 or self.layer_bytes < self.TEAM_MIN_LAYER_BYTES:
            return [(1, False)]
        return [(team, False), (team, True) if n >= 4 * team else (1, False)]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Logits (n, vocab) of one new token per sequence; int64 tensors of length n."""
        n = len(tokens)
        logits = self.logits[:n]
        plans = self._plans(n)
        threads, by_sequence = plan = self.pacer.choose(n, plans) if len(plans) > 1 else plans[0]
        t = time.perf_counter()
        rc = self.lib.shiptwo_decode_step(ctypes.byref(self.model), ctypes.byref(self.work), n, tokens.data_ptr(),
                                          positions.data_ptr(), slots.data_ptr(), logits.data_ptr(), threads, by_sequence)
        if rc != 0:
            raise RuntimeError(f"shiptwo_decode_step returned {rc}")
        if len(plans) > 1:
            self.pacer.record(n, plan, time.perf_counter() - t)
        self.pacer.used[threads] = self.pacer.used.get(threads, 0) + 1
        return logits
