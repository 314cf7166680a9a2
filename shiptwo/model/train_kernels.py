"""The CPU training step's compiled kernels (train_kernels.c) as torch custom ops with their
backward, so torch.compile keeps them inside its graph: causal grouped-query attention, the MLP's
SwiGLU gating, the token embedding's gradient, and the LM head fused with its cross-entropy.

`usable(x)` says when they apply (float32 CPU tensors that need a gradient, the kernels built;
attention also needs head_dim a multiple of 32); elsewhere torch's ops compute the same
functions (apply_rope and scaled_dot_product_attention; F.silu; F.embedding; the head and
F.cross_entropy). The kernels' exp is Cephes' polynomial (~1 ulp; attention's 2^x a fitted one),
so results differ from torch's by float rounding only; tests compare both.
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
XENT_ROWS = 512  # logits rows per block of the fused head (4 MiB at vocab 2048; 128 to 1024 measured alike)
HEAD_DIM_MULTIPLE = 32  # the kernel's column blocks are two 16-float vectors

_i64, _ptr, _f32, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
_SIGNATURES = {  # each returns int: 0, or 1 on bad input, 2 out of memory; the last argument is the thread count
    "shiptwo_attention_forward": [_i64] * 5 + [_f32] + [_ptr] * 7 + [_int],
    "shiptwo_attention_backward": [_i64] * 5 + [_f32] + [_ptr] * 11 + [_int],
    "shiptwo_softmax_xent": [_i64] * 2 + [_ptr] * 4 + [_int],
    "shiptwo_swiglu_forward": [_i64] + [_ptr] * 3 + [_int],
    "shiptwo_swiglu_backward": [_i64] + [_ptr] * 5 + [_int],
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
    return lib if lib.vectorized else None


@torch.compiler.assume_constant_result  # decided once, outside the traced graph (a build is no graph op)
def _built() -> bool:
    return _lib() is not None


def usable(x: torch.Tensor) -> bool:
    """Whether the compiled kernels run on `x` (a float32 CPU tensor needing a gradient)."""
    return x.requires_grad and x.device.type == "cpu" and x.dtype == torch.float32 and _built()


def attention_usable(q: torch.Tensor) -> bool:
    """Whether the compiled kernel runs this attention: q (B, T, H, head_dim)."""
    return usable(q) and q.shape[-1] % HEAD_DIM_MULTIPLE == 0


def _shape(q: torch.Tensor, k: torch.Tensor) -> tuple[int, int, int, int, int, float]:
    B, T, H, hd = q.shape
    return B, T, H, k.shape[2], hd, 1.0 / math.sqrt(hd)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"shiptwo_{what} returned {rc} ({'bad input' if rc == 1 else 'out of memory'})")


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
    _check(_lib().shiptwo_attention_forward(B, T, H, KV, hd, scale, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                            cos.data_ptr(), ssin.data_ptr(), o.data_ptr(), lse.data_ptr(),
                                            torch.get_num_threads()), "attention_forward")
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
    _check(_lib().shiptwo_attention_backward(B, T, H, KV, hd, scale, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                             cos.data_ptr(), ssin.data_ptr(), o.data_ptr(), lse.data_ptr(),
                                             dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                                             torch.get_num_threads()), "attention_backward")
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
    cache (the backward only scales them). w: (N,) weights of the mean (1/N, or a mask / its sum)."""
    h, weight, target, w = h.contiguous(), weight.contiguous(), target.contiguous(), w.contiguous()
    lib, n = _lib(), h.shape[0]
    logits = h.new_empty(min(XENT_ROWS, n), weight.shape[0])
    loss = h.new_empty(n)
    dh, dw = torch.empty_like(h), torch.zeros_like(weight)
    for s in range(0, n, XENT_ROWS):
        rows, block = slice(s, min(n, s + XENT_ROWS)), logits[: min(n, s + XENT_ROWS) - s]
        torch.mm(h[rows], weight.t(), out=block)
        _check(lib.shiptwo_softmax_xent(block.shape[0], block.shape[1], block.data_ptr(), target[rows].data_ptr(),
                                        w[rows].data_ptr(), loss[rows].data_ptr(), torch.get_num_threads()),
               "softmax_xent")
        torch.mm(block, weight, out=dh[rows])
        dw.addmm_(block.t(), h[rows])
    return loss.sum(), dh, dw


@linear_cross_entropy.register_fake
def _(h, weight, target, w):
    return h.new_empty(()), torch.empty_like(h), torch.empty_like(weight)


def _setup_xent(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])


def _backward_xent(ctx, dloss, _ddh, _ddw):
    dh, dw = ctx.saved_tensors
    return dh * dloss, dw * dloss, None, None


linear_cross_entropy.register_autograd(_backward_xent, setup_context=_setup_xent)


@torch.library.custom_op("shiptwo::swiglu", mutates_args=())
def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u (the MLP's gating), one exp and no division an element; the backward
    recomputes the sigmoid from g instead of saving it."""
    if g.shape != u.shape:
        raise ValueError(f"swiglu: gate {tuple(g.shape)} and up {tuple(u.shape)} differ in shape")
    g, u = g.contiguous(), u.contiguous()
    y = torch.empty_like(g)
    _check(_lib().shiptwo_swiglu_forward(g.numel(), g.data_ptr(), u.data_ptr(), y.data_ptr(), torch.get_num_threads()),
           "swiglu_forward")
    return y


@swiglu.register_fake
def _(g, u):
    return torch.empty_like(g)


@torch.library.custom_op("shiptwo::swiglu_backward", mutates_args=())
def swiglu_backward(dy: torch.Tensor, g: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not dy.shape == g.shape == u.shape:
        raise ValueError(f"swiglu_backward: shapes {tuple(dy.shape)}, {tuple(g.shape)}, {tuple(u.shape)} differ")
    dy, g, u = dy.contiguous(), g.contiguous(), u.contiguous()
    dg, du = torch.empty_like(g), torch.empty_like(u)
    _check(_lib().shiptwo_swiglu_backward(g.numel(), g.data_ptr(), u.data_ptr(), dy.data_ptr(), dg.data_ptr(),
                                          du.data_ptr(), torch.get_num_threads()), "swiglu_backward")
    return dg, du


@swiglu_backward.register_fake
def _(dy, g, u):
    return torch.empty_like(g), torch.empty_like(u)


def _setup_swiglu(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward_swiglu(ctx, dy):
    return swiglu_backward(dy, *ctx.saved_tensors)


swiglu.register_autograd(_backward_swiglu, setup_context=_setup_swiglu)


@torch.library.custom_op("shiptwo::embedding", mutates_args=())
def embedding(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """weight[idx] (F.embedding), whose backward sums each token's gradient into its row without
    atomics (inductor's scatter adds every element atomically)."""
    weight, idx = weight.contiguous(), idx.long().contiguous()  # F.embedding takes int32 ids too
    y = weight.new_empty(*idx.shape, weight.shape[1])
    _check(_lib().shiptwo_embedding_forward(idx.numel(), weight.shape[1], weight.shape[0], idx.data_ptr(),
                                            weight.data_ptr(), y.data_ptr(), torch.get_num_threads()),
           "embedding_forward")
    return y


@embedding.register_fake
def _(weight, idx):
    return weight.new_empty(*idx.shape, weight.shape[1])


@torch.library.custom_op("shiptwo::embedding_backward", mutates_args=())
def embedding_backward(dy: torch.Tensor, idx: torch.Tensor, vocab: int) -> torch.Tensor:
    dy, idx = dy.contiguous(), idx.long().contiguous()
    d = dy.shape[-1]
    dw = dy.new_empty(vocab, d)
    _check(_lib().shiptwo_embedding_backward(idx.numel(), d, vocab, idx.data_ptr(), dy.data_ptr(), dw.data_ptr(),
                                             torch.get_num_threads()), "embedding_backward")
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
