"""The CPU training step's compiled kernels (train_kernels.c) as torch custom ops with their
backward, so torch.compile keeps them inside its graph: causal grouped-query attention, a decoder
layer's input RMSNorm with its q/k/v projections and its RMSNorm + MLP + residual, each fused by
blocks of rows (the products through torch's own MKL), the token embedding's gradient, and the LM
head fused with its cross-entropy.

`usable(x)` says when they apply (float32 CPU tensors that need a gradient, the kernels built;
attention also needs head_dim a multiple of 32); elsewhere torch's ops compute the same
functions (apply_rope and scaled_dot_product_attention; RMSNorm, the linears and F.silu;
F.embedding; the head and F.cross_entropy). The kernels' exp is Cephes' polynomial (~1 ulp;
attention's 2^x a fitted one), so results differ from torch's by float rounding only; tests
compare both.
"""

from __future__ import annotations

import ctypes
import logging
import math
from pathlib import Path

import torch

from shiptwo.model import kernels

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("train_kernels.c")
HEAD_DIM_MULTIPLE = 32  # the kernel's column blocks are two 16-float vectors
TORCH_CPU_LIBRARY = "libtorch_cpu.so"  # torch's CPU library (Linux wheels), which links MKL and exports its BLAS
TORCH_BLAS = ("sgemm_", "MKL_Set_Num_Threads_Local")

_i64, _ptr, _f32, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
_SIGNATURES = {  # each returns int: 0, or 1 on bad input, 2 out of memory; the last argument is the thread count
    "shiptwo_attention_forward": [_i64] * 5 + [_f32] + [_ptr] * 7 + [_int],
    "shiptwo_attention_backward": [_i64] * 5 + [_f32] + [_ptr] * 11 + [_int],
    "shiptwo_linear_xent": [_i64] * 3 + [_ptr] * 7 + [_int],
    "shiptwo_norm_qkv_forward": [_i64] * 4 + [_f32] + [_ptr] * 9 + [_int],
    "shiptwo_norm_qkv_backward": [_i64] * 4 + [_ptr] * 14 + [_int],
    "shiptwo_mlp_forward": [_i64] * 4 + [_f32] + [_ptr] * 12 + [_int],
    "shiptwo_mlp_backward": [_i64] * 4 + [_ptr] * 18 + [_int],
    "shiptwo_embedding_forward": [_i64] * 3 + [_ptr] * 3 + [_int],
    "shiptwo_embedding_backward": [_i64] * 3 + [_ptr] * 3 + [_int],
}


def _lib() -> ctypes.CDLL | None:
    """The built kernels, bound; None when unavailable, or built without AVX-512 (this CPU lacks
    it), where their 16-lane vectors run ~10x slower than torch's ops (measured): logged once."""
    lib = kernels.compiled(SOURCE, "training")
    if lib is None:
        return None
    if lib.shiptwo_attention_forward.argtypes is None:  # first use
        lib.shiptwo_train_kernels_avx512.restype = ctypes.c_int
        lib.vectorized = bool(lib.shiptwo_train_kernels_avx512())
        if not lib.vectorized:
            log.warning("training kernels built without AVX-512 (this CPU lacks it), where they are slower than "
                        "torch's ops: torch's ops instead")
        for name, argtypes in _SIGNATURES.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = ctypes.c_int, argtypes
        lib.blas = _bind_blas(lib)
    return lib if lib.vectorized else None


def _bind_blas(lib: ctypes.CDLL) -> bool:
    """Hands the kernels on BLAS torch's own (MKL's sgemm, and MKL's per-thread thread count); False,
    logged, where torch's library exports neither (a build without MKL): torch's ops run instead."""
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / TORCH_CPU_LIBRARY))
        sgemm, local_threads = (ctypes.cast(getattr(torch_cpu, name), ctypes.c_void_p) for name in TORCH_BLAS)
    except (OSError, AttributeError) as exc:
        log.warning("torch's library offers no MKL sgemm (%s): the norms, MLP and head run torch's ops (slower)", exc)
        return False
    lib.shiptwo_set_blas.restype, lib.shiptwo_set_blas.argtypes = None, [_ptr, _ptr]
    lib.shiptwo_set_blas(sgemm, local_threads)
    return True


@torch.compiler.assume_constant_result  # decided once, outside the traced graph (a build is no graph op)
def _built() -> bool:
    return _lib() is not None


def usable(x: torch.Tensor) -> bool:
    """Whether the compiled kernels run on `x` (a float32 CPU tensor needing a gradient)."""
    return x.requires_grad and x.device.type == "cpu" and x.dtype == torch.float32 and _built()


@torch.compiler.assume_constant_result
def _blas_bound() -> bool:
    return _lib() is not None and _lib().blas


def blas_usable(x: torch.Tensor) -> bool:
    """Whether the kernels built on torch's BLAS (the fused norms with their projections, the head with
    its loss) run on `x`: as `usable`, and the BLAS handed to them."""
    return usable(x) and _blas_bound()


def attention_usable(x: torch.Tensor, head_dim: int) -> bool:
    """Whether the compiled kernel runs attention of this head_dim on `x` (its input or its q)."""
    return usable(x) and head_dim % HEAD_DIM_MULTIPLE == 0


def _shape(q: torch.Tensor, k: torch.Tensor) -> tuple[int, int, int, int, int, float]:
    B, T, H, hd = q.shape
    return B, T, H, k.shape[2], hd, 1.0 / math.sqrt(hd)


def _run(name: str, *args: int | float | torch.Tensor) -> None:
    """Calls the kernel shiptwo_`name` with `args` (a tensor as its data pointer) and torch's thread
    count; a non-zero return raises, naming the kernel and why."""
    rc = getattr(_lib(), f"shiptwo_{name}")(*(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args),
                                             torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"shiptwo_{name} returned {rc} ({'bad input' if rc == 1 else 'out of memory'})")


@torch.library.custom_op("shiptwo::causal_attention", mutates_args=())
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                     ssin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(rope(q) rope(k)^T / sqrt(hd), causal) v for q (B, T, H, hd), k and v (B, T, KV, hd),
    q and k rotated by the kernel (`llama.apply_rope` with cos and signed sin (T, hd) of positions
    0..T-1); returns the output (B, T, H, hd) and each row's log-sum-exp (B, H, T), which the
    backward needs."""
    q, k, v, cos, ssin = (t.contiguous() for t in (q, k, v, cos, ssin))
    B, T, H, KV, hd, scale = _shape(q, k)
    if cos.shape != (T, hd) or ssin.shape != (T, hd):
        raise ValueError(f"causal_attention: rotary tables {tuple(cos.shape)}/{tuple(ssin.shape)}, expected {(T, hd)}")
    o, lse = torch.empty_like(q), q.new_empty(B, H, T)
    _run("attention_forward", B, T, H, KV, hd, scale, q, k, v, cos, ssin, o, lse)
    return o, lse


@causal_attention.register_fake
def _(q, k, v, cos, ssin):
    return torch.empty_like(q), q.new_empty(q.shape[0], q.shape[2], q.shape[1])


@torch.library.custom_op("shiptwo::causal_attention_backward", mutates_args=())
def causal_attention_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              cos: torch.Tensor, ssin: torch.Tensor, o: torch.Tensor,
                              lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dout, q, k, v, cos, ssin, o, lse = (t.contiguous() for t in (dout, q, k, v, cos, ssin, o, lse))
    B, T, H, KV, hd, scale = _shape(q, k)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _run("attention_backward", B, T, H, KV, hd, scale, q, k, v, cos, ssin, o, lse, dout, dq, dk, dv)
    return dq, dk, dv


@causal_attention_backward.register_fake
def _(dout, q, k, v, cos, ssin, o, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx, dout, _dlse):
    q, k, v, cos, ssin, o, lse = ctx.saved_tensors
    return *causal_attention_backward(dout, q, k, v, cos, ssin, o, lse), None, None  # the tables are constants


causal_attention.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("shiptwo::linear_cross_entropy", mutates_args=())
def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                         w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sum_r w[r] * cross_entropy(h[r] @ weight.T, target[r]) for h (N, d), weight (vocab, d), with
    its gradients (dh, dweight), computed together block by block so that the logits stay in
    cache (the backward only scales them): each thread's blocks through torch's MKL, as the MLP.
    w: (N,) weights of the mean (1/N, or a mask / its sum)."""
    h, weight, target, w = h.contiguous(), weight.contiguous(), target.contiguous(), w.contiguous()
    (n, d), vocab = h.shape, weight.shape[0]
    loss, dh, dw = h.new_empty(()), torch.empty_like(h), torch.empty_like(weight)
    _run("linear_xent", n, d, vocab, h, weight, target, w, loss, dh, dw)
    return loss, dh, dw


@linear_cross_entropy.register_fake
def _(h, weight, target, w):
    return h.new_empty(()), torch.empty_like(h), torch.empty_like(weight)


def _setup_xent(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])


def _backward_xent(ctx, dloss, _ddh, _ddw):
    dh, dw = ctx.saved_tensors
    return dh * dloss, dw * dloss, None, None


linear_cross_entropy.register_autograd(_backward_xent, setup_context=_setup_xent)


@torch.library.custom_op("shiptwo::norm_qkv", mutates_args=())
def norm_qkv(x: torch.Tensor, wn: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder layer's input RMSNorm and its query/key/value projections, xn = rmsnorm(x) * wn,
    q = xn wq^T, k = xn wk^T, v = xn wv^T, fused by blocks of rows (xn stays in cache), for x
    (..., d): q (..., nq), k and v (..., nk); also each row's 1/rms for the backward."""
    x, wn, wq, wk, wv = x.contiguous(), wn.contiguous(), wq.contiguous(), wk.contiguous(), wv.contiguous()
    d, nq, nk = x.shape[-1], wq.shape[0], wk.shape[0]
    if wn.shape != (d,) or wq.shape != (nq, d) or wk.shape != (nk, d) or wv.shape != (nk, d):
        raise ValueError(f"norm_qkv: weights norm {tuple(wn.shape)}, q {tuple(wq.shape)}, k {tuple(wk.shape)}, "
                         f"v {tuple(wv.shape)} do not fit inputs of width {d}")
    n = x.numel() // d
    q, k, v = x.new_empty(*x.shape[:-1], nq), x.new_empty(*x.shape[:-1], nk), x.new_empty(*x.shape[:-1], nk)
    rstd = x.new_empty(n)
    _run("norm_qkv_forward", n, d, nq, nk, eps, x, wn, wq, wk, wv, q, k, v, rstd)
    return q, k, v, rstd


@norm_qkv.register_fake
def _(x, wn, wq, wk, wv, eps):
    lead = x.shape[:-1]
    return x.new_empty(*lead, wq.shape[0]), x.new_empty(*lead, wk.shape[0]), x.new_empty(*lead, wk.shape[0]), \
        x.new_empty(x.numel() // x.shape[-1])


@torch.library.custom_op("shiptwo::norm_qkv_backward", mutates_args=())
def norm_qkv_backward(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, x: torch.Tensor, wn: torch.Tensor,
                      rstd: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor,
                      wv: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, x, wn, rstd, wq, wk, wv = (t.contiguous() for t in (dq, dk, dv, x, wn, rstd, wq, wk, wv))
    d, nq, nk = x.shape[-1], wq.shape[0], wk.shape[0]
    dx, dwn, dwq, dwk, dwv = (torch.empty_like(t) for t in (x, wn, wq, wk, wv))
    _run("norm_qkv_backward", x.numel() // d, d, nq, nk, x, wn, rstd, dq, dk, dv, wq, wk, wv,
         dx, dwn, dwq, dwk, dwv)
    return dx, dwn, dwq, dwk, dwv


@norm_qkv_backward.register_fake
def _(dq, dk, dv, x, wn, rstd, wq, wk, wv):
    return tuple(torch.empty_like(t) for t in (x, wn, wq, wk, wv))


def _setup_qkv(ctx, inputs, output):
    x, wn, wq, wk, wv, _eps = inputs
    ctx.mark_non_differentiable(output[3])
    ctx.save_for_backward(x, wn, output[3], wq, wk, wv)


def _backward_qkv(ctx, dq, dk, dv, _drstd):
    return *norm_qkv_backward(dq, dk, dv, *ctx.saved_tensors), None  # eps is a constant


norm_qkv.register_autograd(_backward_qkv, setup_context=_setup_qkv)


@torch.library.custom_op("shiptwo::residual_mlp", mutates_args=())
def residual_mlp(x: torch.Tensor, wn: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor, wd: torch.Tensor,
                 eps: float, o: torch.Tensor | None = None, wo: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder layer's second half, x1 + mlp(rmsnorm(x1) * wn), the MLP down(silu(gate) * up), for
    x (..., d) and the weights as the modules store them: wn (d,), wg, wu (I, d), wd (d, I). With
    the attention's output o (..., dO) and its projection wo (d, dO), x1 = x + o wo^T (the output
    projection and its residual); else x1 = x. Fused by blocks of rows, so x1, the normalized input
    and the (tokens, I) activations stay in cache. Returns y, and what the backward needs (none
    takes a gradient): x1 (empty without o), g = gate, u = up (tokens, I) and each row's 1/rms."""
    x, wn, wg, wu, wd = x.contiguous(), wn.contiguous(), wg.contiguous(), wu.contiguous(), wd.contiguous()
    d, inner = x.shape[-1], wg.shape[0]
    n = x.numel() // d
    d_o = 0
    if o is not None:
        o, wo, d_o = o.contiguous(), wo.contiguous(), o.shape[-1]
    if (wn.shape != (d,) or wg.shape != (inner, d) or wu.shape != (inner, d) or wd.shape != (d, inner)
            or (o is not None and (o.numel() != n * d_o or wo.shape != (d, d_o)))):
        raise ValueError(f"residual_mlp: weights norm {tuple(wn.shape)}, gate {tuple(wg.shape)}, up {tuple(wu.shape)}, "
                         f"down {tuple(wd.shape)}, output projection {None if wo is None else tuple(wo.shape)} "
                         f"do not fit inputs of width {d}")
    x1 = x.new_empty(0) if o is None else torch.empty_like(x)
    g, u, rstd, y = x.new_empty(n, inner), x.new_empty(n, inner), x.new_empty(n), torch.empty_like(x)
    _run("mlp_forward", n, d, inner, d_o, eps, x, o, wo, wn, wg, wu, wd, x1, g, u, rstd, y)
    return y, x1, g, u, rstd


@residual_mlp.register_fake
def _(x, wn, wg, wu, wd, eps, o=None, wo=None):
    n = x.numel() // x.shape[-1]
    return (torch.empty_like(x), x.new_empty(0) if o is None else torch.empty_like(x), x.new_empty(n, wg.shape[0]),
            x.new_empty(n, wg.shape[0]), x.new_empty(n))


@torch.library.custom_op("shiptwo::residual_mlp_backward", mutates_args=())
def residual_mlp_backward(dy: torch.Tensor, x1: torch.Tensor, wn: torch.Tensor, rstd: torch.Tensor, g: torch.Tensor,
                          u: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor, wd: torch.Tensor,
                          o: torch.Tensor | None = None, wo: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                     torch.Tensor, torch.Tensor]:
    """dx, dwn, dwg, dwu, dwd and, with o, do and dwo (else empty); x1 is the MLP's input."""
    dy, x1, wn, rstd, g, u, wg, wu, wd = (t.contiguous() for t in (dy, x1, wn, rstd, g, u, wg, wu, wd))
    d, inner = x1.shape[-1], wg.shape[0]
    dx, dwn, dwg, dwu, dwd = (torch.empty_like(t) for t in (x1, wn, wg, wu, wd))
    if o is None:
        d_o, do, dwo = 0, x1.new_empty(0), x1.new_empty(0)
    else:
        o, wo = o.contiguous(), wo.contiguous()
        d_o, do, dwo = o.shape[-1], torch.empty_like(o), torch.empty_like(wo)
    _run("mlp_backward", x1.numel() // d, d, inner, d_o, x1, o, wo, wn, rstd, g, u, dy, wg, wu, wd,
         dx, do, dwo, dwn, dwg, dwu, dwd)
    return dx, dwn, dwg, dwu, dwd, do, dwo


@residual_mlp_backward.register_fake
def _(dy, x1, wn, rstd, g, u, wg, wu, wd, o=None, wo=None):
    ends = (x1.new_empty(0), x1.new_empty(0)) if o is None else (torch.empty_like(o), torch.empty_like(wo))
    return *(torch.empty_like(t) for t in (x1, wn, wg, wu, wd)), *ends


def _setup_mlp(ctx, inputs, output):
    x, wn, wg, wu, wd, _eps, o, wo = inputs
    _, x1, g, u, rstd = output
    ctx.mark_non_differentiable(x1, g, u, rstd)
    ctx.save_for_backward(x if o is None else x1, wn, rstd, g, u, wg, wu, wd, o, wo)
    ctx.fused = o is not None


def _backward_mlp(ctx, dy, _dx1, _dg, _du, _drstd):
    dx, dwn, dwg, dwu, dwd, do, dwo = residual_mlp_backward(dy, *ctx.saved_tensors)
    if not ctx.fused:  # no projection: its gradients are the empty placeholders
        do = dwo = None
    return dx, dwn, dwg, dwu, dwd, None, do, dwo  # eps is a constant


residual_mlp.register_autograd(_backward_mlp, setup_context=_setup_mlp)


@torch.library.custom_op("shiptwo::embedding", mutates_args=())
def embedding(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """weight[idx] (F.embedding), whose backward sums each token's gradient into its row without
    atomics (inductor's scatter adds every element atomically)."""
    weight, idx = weight.contiguous(), idx.long().contiguous()  # F.embedding takes int32 ids too
    y = weight.new_empty(*idx.shape, weight.shape[1])
    _run("embedding_forward", idx.numel(), weight.shape[1], weight.shape[0], idx, weight, y)
    return y


@embedding.register_fake
def _(weight, idx):
    return weight.new_empty(*idx.shape, weight.shape[1])


@torch.library.custom_op("shiptwo::embedding_backward", mutates_args=())
def embedding_backward(dy: torch.Tensor, idx: torch.Tensor, vocab: int) -> torch.Tensor:
    dy, idx = dy.contiguous(), idx.long().contiguous()
    d = dy.shape[-1]
    dw = dy.new_empty(vocab, d)
    _run("embedding_backward", idx.numel(), d, vocab, idx, dy, dw)
    return dw


@embedding_backward.register_fake
def _(dy, idx, vocab):
    return dy.new_empty(vocab, dy.shape[-1])


def _setup_embedding(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.vocab = inputs[0].shape[0]


def _backward_embedding(ctx, dy):
    (idx,) = ctx.saved_tensors
    return embedding_backward(dy, idx, ctx.vocab), None


embedding.register_autograd(_backward_embedding, setup_context=_setup_embedding)
