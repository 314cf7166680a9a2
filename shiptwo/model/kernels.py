"""The compiled decode step (kernels.c): built once per machine with its C compiler, loaded with
ctypes, and bound to one model's weights as a `DecodeKernel`.

When it cannot be used (no compiler, a failed build, weights that are not contiguous float32 on
the CPU, or SHIPTWO_KERNELS=0) `load()` says why in a logged warning and returns None; the caller
then decodes with plain torch ops, the slower path, never silently.
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
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
ENV_SWITCH = "SHIPTWO_KERNELS"  # "0" turns the compiled step off (benchmarks compare both paths)
CFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")

_i64, _f32p, _i64p = ctypes.c_int64, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64)


class _Layer(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in (
        "input_norm", "wq", "wk", "wv", "wo", "post_norm", "wgate", "wup", "wdown", "k_cache", "v_cache")]


class _Model(ctypes.Structure):
    _fields_ = [*((n, _i64) for n in ("hidden", "inter", "heads", "kv_heads", "head_dim", "vocab", "n_layers", "capacity",
                                      "team_min_layer_bytes")),
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


def _build(cc: str) -> Path:
    """Compile kernels.c to a shared library named by what it depends on (source, compiler,
    flags, CPU), atomically, so concurrent test workers never load a half-written file."""
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(CFLAGS).encode(), _cpu_flags().encode()]))
    out = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        lib = Path(tmp) / out.name
        subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", str(lib), "-lm"], capture_output=True, text=True, check=True)
        os.replace(lib, out)
    return out


def load() -> ctypes.CDLL | None:
    """The compiled library, built on first use; None (with a logged reason) when unavailable."""
    if "lib" in _state:
        return _state["lib"]
    lib = None
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.warning("decode kernels off (%s=0): decoding with torch ops (slower)", ENV_SWITCH)
    elif (cc := os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")) is None:
        log.warning("decode kernels unavailable: no C compiler (cc/gcc) on PATH; decoding with torch ops (slower)")
    else:
        try:
            # torch is imported first, so the library's libgomp resolves to the OpenMP runtime torch
            # already loaded: one thread pool, not two competing ones.
            lib = ctypes.CDLL(str(_build(cc)))
            lib.shiptwo_decode_step.restype = ctypes.c_int
            lib.shiptwo_decode_step.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_Work), _i64,
                                                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            log.warning("decode kernels unavailable: build of %s failed (%s); decoding with torch ops (slower)",
                        SOURCE.name, detail.strip().splitlines()[-1] if detail.strip() else exc)
    _state["lib"] = lib
    return lib


def unsuitable(model) -> str | None:
    """Why the compiled step cannot run this model's weights (None when it can)."""
    if model.config.head_dim > 512:
        return f"head_dim {model.config.head_dim} > 512"
    for name, p in model.named_parameters():
        if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
            return f"parameter {name} is {p.dtype} on {p.device.type}{'' if p.is_contiguous() else ', not contiguous'}"
    return None


class DecodeKernel:
    """The compiled step bound to a model's weights, its rope tables and a slot KV cache
    (k, v: (layers, slots, kv_heads, capacity, head_dim)); scratch sized for all slots."""

    # Below ~2 MiB of weights a layer, barriers cost more than a second thread saves (measured on
    # 2 cores: a 1M-parameter model decodes faster on one); the step then uses one thread.
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
        self.model = _Model(h, i, H, KV, hd, cfg.vocab_size, cfg.num_hidden_layers, capacity, self.TEAM_MIN_LAYER_BYTES,
                            cfg.rms_norm_eps,
                            model.model.embed_tokens.weight.data_ptr(), model.model.norm.weight.data_ptr(),
                            model.lm_head.weight.data_ptr(), cos.data_ptr(), ssin.data_ptr(),
                            ctypes.cast(layers, ctypes.POINTER(_Layer)))
        sizes = {"x": h, "xn": h, "qkv": (H + 2 * KV) * hd, "att": H * hd, "gate_up": 2 * i, "act": i, "scores": H * capacity}
        bufs = {k: torch.empty(slots, v) for k, v in sizes.items()}
        self.work = _Work(**{k: t.data_ptr() for k, t in bufs.items()})
        self._keep += [layers, bufs]
        self.logits = torch.empty(slots, cfg.vocab_size)
        self.lib = lib

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Logits (n, vocab) of one new token per sequence; int64 tensors of length n."""
        n = len(tokens)
        logits = self.logits[:n]
        rc = self.lib.shiptwo_decode_step(ctypes.byref(self.model), ctypes.byref(self.work), n, tokens.data_ptr(),
                                          positions.data_ptr(), slots.data_ptr(), logits.data_ptr(), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"shiptwo_decode_step returned {rc}")
        return logits
