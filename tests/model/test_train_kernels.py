"""The CPU training kernels compute what torch's ops compute: causal grouped-query attention with
its rotary embedding, and its gradients, against apply_rope + scaled_dot_product_attention; the
fused RMSNorm + q/k/v projections and RMSNorm + MLP + residual against torch's; the embedding against F.embedding; the fused head + cross-entropy
and its gradients against the head and F.cross_entropy (plain and masked means); at shapes that
exercise every tail (sequence lengths off the 8-row blocks, a vocabulary off the 16-lane vectors);
results ignore the thread count; a broken kernel would be caught (a deliberately wrong mask or
rotation is); bad input is refused; and an unavailable build is logged, with torch's ops used
instead."""

from __future__ import annotations

import ctypes
import re
import logging
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F

from shiptwo.measure.bench import torch_threads
from shiptwo.model import kernels, train_kernels
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel, apply_rope, rope_cache, signed_sin

pytestmark = pytest.mark.skipif(train_kernels._lib() is None, reason="training kernels unavailable here (logged)")


@pytest.fixture(autouse=True)
def unwritten_memory_is_nan():
    """Fresh tensors filled with NaN (deterministic mode's fill, which training turns off for speed):
    an output element a kernel forgets to write then fails the comparisons below."""
    prev_det, prev_fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(prev_det)
    torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def test_an_output_row_a_kernel_leaves_unwritten_shows_as_nan():
    w, idx = torch.randn(7, 32), torch.tensor([3, 1, 4, 1, 5])
    y = w.new_empty(5, 32)
    train_kernels._run("embedding_forward", 4, 32, 7, idx, w, y)  # told one row too few
    assert torch.equal(y[:4], w[idx[:4]]) and y[4].isnan().all()


def _qkv(B, T, H, KV, hd, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, n, hd, generator=gen).requires_grad_() for n in (H, KV, KV))
    return q, k, v, torch.randn(B, T, H, hd, generator=gen)


def _tables(T, hd, start=0):
    """The model's rotary tables (cos, signed sin), (T, hd), for positions start..start+T-1."""
    cos, sin = rope_cache(ModelConfig(hidden_size=hd, num_attention_heads=1, num_key_value_heads=1),
                          torch.arange(start, start + T))
    return cos, signed_sin(sin)


def _sdpa(q, k, v, start=0):
    """torch's attention on q and k rotated by torch (llama.apply_rope)."""
    cos, ssin = (t[:, None] for t in _tables(q.shape[1], q.shape[3], start))
    q, k = apply_rope(q, cos, ssin), apply_rope(k, cos, ssin)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                       enable_gqa=q.shape[2] != k.shape[2])
    return y.transpose(1, 2)


def _kernel(q, k, v):
    return train_kernels.causal_attention(q, k, v, *_tables(q.shape[1], q.shape[3]))[0]


def _grads(fn, q, k, v, dout):
    for t in (q, k, v):
        t.grad = None
    y = fn(q, k, v)
    y.backward(dout)
    return y.detach(), [t.grad.clone() for t in (q, k, v)]


@pytest.mark.parametrize("B,T,H,KV,hd", [(2, 37, 4, 2, 32), (1, 64, 2, 2, 64), (3, 1, 4, 1, 32), (2, 200, 6, 2, 32),
                                          (1, 300, 2, 1, 32)])  # 300: two of the backward's 256-row blocks
def test_attention_matches_torch_forward_and_backward(B, T, H, KV, hd):
    q, k, v, dout = _qkv(B, T, H, KV, hd)
    y_ref, g_ref = _grads(_sdpa, q, k, v, dout)
    y, g = _grads(_kernel, q, k, v, dout)
    assert torch.allclose(y, y_ref, atol=2e-6, rtol=1e-5)
    for name, a, b in zip("qkv", g, g_ref):
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), f"d{name}: {float((a - b).abs().max())}"


def test_a_wrong_mask_is_caught_by_the_same_comparison():
    """The comparison above can fail: attention that lets a query see one future key differs."""
    q, k, v, dout = _qkv(2, 37, 4, 2, 32)
    leaky = torch.ones(37, 37, dtype=torch.bool).tril(diagonal=1)
    y_leak = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=leaky,
                                            enable_gqa=True).transpose(1, 2)
    y = _kernel(q, k, v)
    assert not torch.allclose(y, y_leak, atol=2e-6, rtol=1e-5)


def test_a_missing_or_reversed_rotation_is_caught_by_the_same_comparison():
    """RoPE scores depend on relative positions only, so the defects that matter are a rotation left
    out or turned the wrong way; the comparison tells both from the kernel."""
    q, k, v, _ = _qkv(2, 37, 4, 2, 32)
    y = _kernel(q, k, v)
    cos, ssin = (t[:, None] for t in _tables(37, 32))
    for wrong in (lambda x: x, lambda x: apply_rope(x, cos, -ssin)):
        qw, kw = wrong(q), wrong(k)
        y_wrong = F.scaled_dot_product_attention(qw.transpose(1, 2), kw.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True, enable_gqa=True).transpose(1, 2)
        assert not torch.allclose(y, y_wrong, atol=2e-6, rtol=1e-5)


def test_attention_refuses_rotary_tables_of_another_length():
    q, k, v, _ = _qkv(1, 8, 2, 1, 32)
    with pytest.raises(ValueError, match="rotary tables"):
        train_kernels.causal_attention(q, k, v, *_tables(9, 32))


def test_attention_ignores_the_thread_count():
    q, k, v, dout = _qkv(4, 50, 4, 2, 32, seed=1)
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(_grads(_kernel, q, k, v, dout))
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("masked", [False, True])
def test_fused_head_cross_entropy_matches_torch(masked):
    gen = torch.Generator().manual_seed(2)
    n, d, V = 1100, 48, 301  # more rows than one block, a vocabulary with a scalar tail
    h = torch.randn(n, d, generator=gen, requires_grad=True)
    weight = (torch.randn(V, d, generator=gen) * 0.3).requires_grad_()
    target = torch.randint(0, V, (n,), generator=gen)
    mask = (torch.rand(n, generator=gen) > 0.4).float() if masked else torch.ones(n)
    w = mask / mask.sum()
    loss = train_kernels.linear_cross_entropy(h, weight, target, w)[0]
    (loss * 3.0).backward()  # an upstream gradient other than 1 reaches both inputs
    got = [loss.detach(), h.grad.clone(), weight.grad.clone()]
    h.grad = weight.grad = None
    ce = F.cross_entropy(h @ weight.t(), target, reduction="none")
    ref = (ce * mask).sum() / mask.sum()
    (ref * 3.0).backward()
    assert torch.allclose(got[0], ref.detach(), atol=1e-5)
    assert torch.allclose(got[1], h.grad, atol=1e-6, rtol=1e-4) and torch.allclose(got[2], weight.grad, atol=1e-6, rtol=1e-4)
    if masked:
        assert torch.count_nonzero(got[1][mask == 0]) == 0  # unsupervised targets send no gradient


EPS = 1e-5


def _mlp_inputs(n, d, inner, seed=3):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=gen) * 2).requires_grad_()
    wn = (1 + 0.3 * torch.randn(d, generator=gen)).requires_grad_()
    wg, wu, wd = ((torch.randn(*shape, generator=gen) * 0.3).requires_grad_()
                  for shape in ((inner, d), (inner, d), (d, inner)))
    with torch.no_grad():
        x[0] = 0.0  # a zero row: rms 0, only eps keeps the norm finite
        wg[0] *= 60  # gates past exp's clamp both ways
    return x, wn, wg, wu, wd, torch.randn(n, d, generator=gen)


def _mlp_grads(fn, x, wn, wg, wu, wd, dy):
    for t in (x, wn, wg, wu, wd):
        t.grad = None
    y = fn(x, wn, wg, wu, wd)
    y.backward(dy)
    return y.detach(), [t.grad.clone() for t in (x, wn, wg, wu, wd)]


def _torch_mlp(x, wn, wg, wu, wd):
    """x + mlp(post_attention_layernorm(x)), as llama.DecoderLayer computes it without the kernel."""
    xn = wn * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))
    return x + F.linear(F.silu(F.linear(xn, wg)) * F.linear(xn, wu), wd)


def _kernel_mlp(x, wn, wg, wu, wd):
    return train_kernels.residual_mlp(x, wn, wg, wu, wd, EPS)[0]


def _projection_inputs(n, d, d_o, seed=11):
    """An attention output o (n, d_o) and an output projection wo (d, d_o), both taking gradients."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d_o, generator=gen).requires_grad_(),
            (torch.randn(d, d_o, generator=gen) * 0.3).requires_grad_())


def _fused_grads(fn, x, wn, wg, wu, wd, o, wo, dy):
    """fn(x, ..., o, wo) with the gradients of all seven inputs."""
    o.grad = wo.grad = None
    y, grads = _mlp_grads(lambda *a: fn(*a, o, wo), x, wn, wg, wu, wd, dy)
    return y, grads + [o.grad.clone(), wo.grad.clone()]


def _torch_fused(x, wn, wg, wu, wd, o, wo):
    """The layer's second half as llama.DecoderLayer computes it without the kernels: the output
    projection's residual, then the MLP's."""
    return _torch_mlp(x + F.linear(o, wo), wn, wg, wu, wd)


def _kernel_fused(x, wn, wg, wu, wd, o, wo):
    return train_kernels.residual_mlp(x, wn, wg, wu, wd, EPS, o, wo)[0]


def _assert_close(names, got, want):
    for name, a, b in zip(names, got, want):
        assert torch.isfinite(a).all(), f"{name} not finite"
        # float32 sums over up to 1030 rows in another order: errors relative to the tensor's scale
        assert (a - b).abs().max() <= 2e-5 * b.abs().max(), f"{name}: {float((a - b).abs().max() / b.abs().max())}"


# one block; blocks and slabs with partial tails (1030 rows: a slab of 1024 and 6 rows); widths off the
# 16-lane vectors (scalar tails in the norm and the gating)
@pytest.mark.parametrize("n,d,inner", [(40, 64, 96), (1030, 128, 352), (300, 40, 37)])
def test_residual_mlp_matches_torch_forward_and_backward(n, d, inner):
    inputs = _mlp_inputs(n, d, inner)
    y, grads = _mlp_grads(_kernel_mlp, *inputs)
    ref, ref_grads = _mlp_grads(_torch_mlp, *inputs)
    _assert_close(("y", "dx", "dnorm", "dgate", "dup", "ddown"), [y, *grads], [ref, *ref_grads])


# the model's square projection; an attention output wider than the model (d_o 48 != d 40)
@pytest.mark.parametrize("n,d,inner,d_o", [(1030, 128, 352, 128), (300, 40, 37, 48)])
def test_residual_mlp_with_the_output_projection_matches_torch(n, d, inner, d_o):
    *weights, dy = _mlp_inputs(n, d, inner)
    o, wo = _projection_inputs(n, d, d_o)
    y, grads = _fused_grads(_kernel_fused, *weights, o, wo, dy)
    ref, ref_grads = _fused_grads(_torch_fused, *weights, o, wo, dy)
    _assert_close(("y", "dx", "dnorm", "dgate", "dup", "ddown", "do", "dwo"), [y, *grads], [ref, *ref_grads])


def test_a_transposed_or_missing_output_projection_is_caught_by_the_same_comparison():
    *weights, _ = _mlp_inputs(64, 64, 96)
    o, wo = _projection_inputs(64, 64, 64)
    ref = _torch_fused(*weights, o, wo)
    for y in (_kernel_fused(*weights, o, wo.t()), _kernel_mlp(*weights)):
        assert (y - ref).abs().max() > 1e-4 * ref.abs().max()


def test_a_swapped_gate_and_up_or_a_missing_norm_is_caught_by_the_same_comparison():
    x, wn, wg, wu, wd, _ = _mlp_inputs(64, 64, 96)
    ref = _torch_mlp(x, wn, wg, wu, wd)
    for y in (_kernel_mlp(x, wn, wu, wg, wd), _kernel_mlp(x, torch.ones_like(wn), wg, wu, wd)):
        assert (y - ref).abs().max() > 1e-4 * ref.abs().max()


def test_residual_mlp_ignores_the_thread_count():
    inputs = _mlp_inputs(2100, 64, 96, seed=4)  # three slabs of rows: their weight gradients sum in one order
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(_mlp_grads(_kernel_mlp, *inputs))
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    *weights, dy = inputs
    o, wo = _projection_inputs(2100, 64, 64)
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(_fused_grads(_kernel_fused, *weights, o, wo, dy))
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_residual_mlp_refuses_weights_that_do_not_fit():
    x, wn, wg, wu, wd, _ = _mlp_inputs(8, 64, 96)
    with pytest.raises(ValueError, match="do not fit"):
        train_kernels.residual_mlp(x, wn, wg, wu, wd.t(), EPS)
    with pytest.raises(ValueError, match="do not fit"):
        train_kernels.residual_mlp(x, wn[:-1], wg, wu, wd, EPS)
    o, wo = _projection_inputs(8, 64, 32)
    with pytest.raises(ValueError, match="do not fit"):
        train_kernels.residual_mlp(x, wn, wg, wu, wd, EPS, o, wo.t())


def test_what_the_backward_keeps_takes_no_gradient():
    x, wn, wg, wu, wd, _ = _mlp_inputs(8, 64, 96)
    y, *kept = train_kernels.residual_mlp(x, wn, wg, wu, wd, EPS)
    assert y.requires_grad and not any(t.requires_grad for t in kept)


def _qkv_inputs(n, d, nq, nk, seed=7):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=gen) * 2).requires_grad_()
    wn = (1 + 0.3 * torch.randn(d, generator=gen)).requires_grad_()
    ws = [(torch.randn(m, d, generator=gen) * 0.3).requires_grad_() for m in (nq, nk, nk)]
    with torch.no_grad():
        x[0] = 0.0  # a zero row: only eps keeps the norm finite
    return x, wn, *ws, [torch.randn(n, m, generator=gen) for m in (nq, nk, nk)]


def _qkv_grads(fn, x, wn, wq, wk, wv, douts):
    for t in (x, wn, wq, wk, wv):
        t.grad = None
    outs = fn(x, wn, wq, wk, wv)
    torch.autograd.backward(outs, douts)
    return [o.detach() for o in outs], [t.grad.clone() for t in (x, wn, wq, wk, wv)]


def _torch_qkv(x, wn, wq, wk, wv):
    xn = wn * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))
    return [F.linear(xn, w) for w in (wq, wk, wv)]


def _kernel_qkv(x, wn, wq, wk, wv):
    return list(train_kernels.norm_qkv(x, wn, wq, wk, wv, EPS)[:3])


@pytest.mark.parametrize("n,d,nq,nk", [(40, 64, 64, 32), (1030, 128, 128, 64), (300, 40, 24, 8)])
def test_norm_qkv_matches_torch_forward_and_backward(n, d, nq, nk):
    *inputs, douts = _qkv_inputs(n, d, nq, nk)
    got, grads = _qkv_grads(_kernel_qkv, *inputs, douts)
    ref, ref_grads = _qkv_grads(_torch_qkv, *inputs, douts)
    names = ("q", "k", "v", "dx", "dnorm", "dwq", "dwk", "dwv")
    for name, a, b in zip(names, [*got, *grads], [*ref, *ref_grads]):
        assert torch.isfinite(a).all(), f"{name} not finite"
        assert (a - b).abs().max() <= 2e-5 * b.abs().max(), f"{name}: {float((a - b).abs().max() / b.abs().max())}"
    unnormed = train_kernels.norm_qkv(inputs[0], torch.ones_like(inputs[1]), *inputs[2:], EPS)[0]
    assert (unnormed - ref[0]).abs().max() > 1e-4 * ref[0].abs().max()  # the comparison catches a dropped norm weight


def test_norm_qkv_ignores_the_thread_count_and_refuses_misfit_weights():
    *inputs, douts = _qkv_inputs(2100, 64, 64, 32)
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(_qkv_grads(_kernel_qkv, *inputs, douts))
    assert all(torch.equal(a, b) for a, b in zip([*results[0][0], *results[0][1]], [*results[1][0], *results[1][1]]))
    x, wn, wq, wk, wv = inputs
    with pytest.raises(ValueError, match="do not fit"):
        train_kernels.norm_qkv(x, wn, wq, wk, wv.t(), EPS)


def test_embedding_matches_torch_and_sums_repeated_tokens_in_any_thread_count():
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(50, 48, generator=gen, requires_grad=True)
    idx = torch.randint(0, 50, (3, 70), generator=gen, dtype=torch.int32)  # 210 tokens for 50 rows: repeats
    idx[0, :5] = 7  # one row hit five times in a row
    dy = torch.randn(3, 70, 48, generator=gen)
    F.embedding(idx, weight).backward(dy)
    ref = weight.grad.clone()
    results = []
    for threads in (1, 2):
        weight.grad = None
        with torch_threads(threads):
            y = train_kernels.embedding(weight, idx)
            y.backward(dy)
        assert torch.equal(y, F.embedding(idx, weight))
        assert torch.allclose(weight.grad, ref, atol=1e-6, rtol=1e-5)
        results.append(weight.grad.clone())
    assert torch.equal(*results)  # each row sums its tokens in one order whatever the threads
    with pytest.raises(RuntimeError, match="bad input"):
        train_kernels.embedding(weight, torch.tensor([0, 50]))


def test_fused_head_ignores_the_thread_count():
    gen = torch.Generator().manual_seed(6)
    h = torch.randn(2100, 48, generator=gen)  # three slabs of rows: the weight's gradient sums in one order
    weight, target = torch.randn(301, 48, generator=gen), torch.randint(0, 301, (2100,), generator=gen)
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(train_kernels.linear_cross_entropy(h, weight, target, torch.full((2100,), 1 / 2100)))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_an_out_of_range_target_is_refused():
    h, weight = torch.randn(4, 32), torch.randn(10, 32)
    with pytest.raises(RuntimeError, match="bad input"):
        train_kernels.linear_cross_entropy(h, weight, torch.tensor([0, 1, 10, 2]), torch.full((4,), 0.25))


def test_a_training_forward_runs_the_kernels_and_matches_torchs_ops():
    cfg = ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1)
    model = LlamaModel(cfg)
    model.init_weights(seed=4)
    x = torch.randint(0, 300, (3, 40))
    trained = model(x)  # parameters need gradients: the attention kernel runs
    with torch.no_grad():
        reference = model(x)  # no gradient: torch's scaled_dot_product_attention
    assert train_kernels.attention_usable(torch.zeros(1, 1, 1, 32, requires_grad=True), 32)
    assert torch.allclose(trained, reference, atol=1e-5) and not torch.equal(trained, reference)


def test_the_embedding_kernel_runs_only_where_a_gradient_is_taken(monkeypatch):
    """Inference (generation, evaluation) keeps torch's lookup: the custom op's dispatch would only add cost."""
    model = LlamaModel(ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1))
    calls = []
    real = train_kernels.embedding
    monkeypatch.setattr(train_kernels, "embedding", lambda w, idx: calls.append(idx.shape) or real(w, idx))
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        model(x)
    assert calls == []
    model(x).sum().backward()
    assert calls == [x.shape] and model.model.embed_tokens.weight.grad is not None


def test_unavailable_training_kernels_are_logged_and_torch_runs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: the build must run, and fails
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setattr(train_kernels, "_built", lambda: train_kernels._lib() is not None)
    with caplog.at_level(logging.WARNING, logger="shiptwo.model.kernels"):
        assert not train_kernels.usable(torch.zeros(2, requires_grad=True))
    assert "training kernels unavailable: build of train_kernels.c failed" in caplog.text


def test_kernels_built_without_avx512_are_refused_and_logged(tmp_path, monkeypatch, caplog):
    """Emulated 16-lane vectors (~10x slower than torch's ops, measured) are not used, and say so."""
    lib_path = tmp_path / "train_kernels_noavx512.so"
    subprocess.run([shutil.which("cc") or "gcc", *kernels.CFLAGS, "-mno-avx512f", str(train_kernels.SOURCE), "-o",
                    str(lib_path), "-lm"], check=True, capture_output=True)
    monkeypatch.setitem(kernels._state, train_kernels.SOURCE, ctypes.CDLL(str(lib_path)))
    with caplog.at_level(logging.WARNING, logger="shiptwo.model.train_kernels"):
        assert train_kernels._lib() is None
    assert "without AVX-512" in caplog.text


def test_a_torch_without_mkl_is_logged_and_the_mlp_runs_torchs_ops(monkeypatch, caplog):
    monkeypatch.setattr(train_kernels, "TORCH_BLAS", ("sgemm_", "no_such_symbol"))
    with caplog.at_level(logging.WARNING, logger="shiptwo.model.train_kernels"):
        assert not train_kernels._bind_blas(train_kernels._lib())
    assert "no MKL sgemm" in caplog.text
    monkeypatch.setattr(train_kernels, "_blas_bound", lambda: False)
    x = torch.randn(3, 64, requires_grad=True)
    assert train_kernels.usable(x) and not train_kernels.blas_usable(x)


def test_every_binding_declares_the_c_functions_parameters():
    """ctypes passes an argument beyond its declared types as a 32-bit int: a pointer there loses its
    upper half (and only sometimes crashes), so each declared signature must match the C source."""
    source = train_kernels.SOURCE.read_text()
    for name, argtypes in train_kernels._SIGNATURES.items():
        match = re.search(rf"\bint {name}\(([^)]*)\)", source)
        assert match, f"{name} not defined in {train_kernels.SOURCE.name}"
        params = [p.strip() for p in match.group(1).split(",")]
        kinds = [ctypes.c_void_p if "*" in p else ctypes.c_float if p.startswith("float") else
                 ctypes.c_int if p.startswith("int ") else ctypes.c_int64 for p in params]
        assert kinds == argtypes, f"{name}: C takes {params}"
