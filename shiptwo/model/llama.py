"""A LLaMA-architecture decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

Module and parameter names follow Hugging Face's `LlamaForCausalLM`, so a state dict of this
model *is* a Hugging Face state dict; the GGUF names are mapped in `tensor_names.py`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from shiptwo.errors import ShiptwoError
from shiptwo.model import train_kernels
from shiptwo.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in float32 as Hugging Face does, then cast back before the weight.
        dtype = x.dtype
        if dtype == torch.float32:  # same arithmetic without two no-op casts (decode is dispatch-bound)
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cache(config: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables in Hugging Face's rotate-half layout: (T, head_dim)."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: rotate_half(x) * sin == x.roll(half) * signed_sin(sin), exactly."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, ssin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in Hugging Face's rotate-half layout; `ssin` is `signed_sin(sin)`."""
    if cos.dtype != x.dtype:
        cos, ssin = cos.to(x.dtype), ssin.to(x.dtype)
    return x * cos + x.roll(x.shape[-1] // 2, -1) * ssin


class KVCache:
    """Preallocated key/value buffers, (layers, batch, kv_heads, max_len, head_dim) each, for
    incremental decoding; `row(b)` is a one-sequence view whose writes land in row b."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device, dtype):
        if max_len > config.max_position_embeddings:
            raise ShiptwoError(
                f"KV cache length {max_len} exceeds max_position_embeddings "
                f"{config.max_position_embeddings}"
            )
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        # Uninitialized: attention only ever reads positions already written.
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0  # tokens already stored

    def row(self, b: int) -> "KVCache":
        view = copy.copy(self)
        view.k, view.v, view.length = self.k[:, b : b + 1], self.v[:, b : b + 1], 0
        return view

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ShiptwoError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        T = end - start
        self.k[layer].narrow(2, start, T).copy_(k)
        self.v[layer].narrow(2, start, T).copy_(v)
        return self.k[layer].narrow(2, 0, end), self.v[layer].narrow(2, 0, end)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        h, hd = config.hidden_size, config.head_dim
        self.n_head, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        self.q_proj = nn.Linear(h, self.n_head * hd, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_head * hd, h, bias=False)

    def forward(self, x, cos, ssin, layer: int, cache: KVCache | None, key_mask: torch.Tensor | None = None):
        """`cos`/`ssin`: rope tables for these tokens, (T, 1, head_dim) or (B, T, 1, head_dim):
        token-major, so they broadcast over heads before the head transpose."""
        B, T, _ = x.shape
        H, KV, hd = self.n_head, self.n_kv, self.head_dim
        q = self.q_proj(x).view(B, T, H, hd)
        k = self.k_proj(x).view(B, T, KV, hd)
        v = self.v_proj(x).view(B, T, KV, hd)
        if cache is None and key_mask is None and train_kernels.attention_usable(q, hd):
            return self.o_proj(self.attend(q, k, v, cos, ssin))
        q, k = apply_rope(q, cos, ssin), apply_rope(k, cos, ssin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer, k, v)
        gqa = self.n_kv != self.n_head
        if key_mask is None and past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif key_mask is None and T == 1:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)  # one new query sees every key
        else:
            # New queries sit at positions past..past+T-1 and may see keys 0..their own position.
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)
            if key_mask is not None:
                # Padding keys are hidden; each query keeps its own key so padded rows stay finite.
                own = torch.zeros(T, S, dtype=torch.bool, device=x.device)
                own[torch.arange(T), past + torch.arange(T)] = True
                mask = (mask & key_mask[:, None, None, :S]) | own
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def attend(self, q, k, v, cos, ssin):
        """Training on a CPU: the attention kernel on q (B, T, H, hd), k and v (B, T, KV, hd), token-major
        (no transposes; the kernel applies the rotary embedding); its output (B, T, H * hd) before the
        output projection."""
        B, T, _, hd = q.shape
        return train_kernels.causal_attention(q, k, v, cos.reshape(T, hd), ssin.reshape(T, hd))[0].reshape(B, T, -1)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, layer, cache, key_mask=None):
        attn, norm = self.self_attn, self.input_layernorm
        o = wo = None
        if (cache is None and key_mask is None and train_kernels.blas_usable(x)
                and train_kernels.attention_usable(x, attn.head_dim)):  # training on a CPU: fused kernels
            B, T, _ = x.shape
            q, k, v, _ = train_kernels.norm_qkv(x, norm.weight, attn.q_proj.weight, attn.k_proj.weight,
                                                attn.v_proj.weight, norm.eps)
            o = attn.attend(q.view(B, T, attn.n_head, -1), k.view(B, T, attn.n_kv, -1), v.view(B, T, attn.n_kv, -1),
                            cos, sin)
            wo = attn.o_proj.weight  # x + o wo^T is fused into the MLP's kernel below
        else:
            x = x + attn(norm(x), cos, sin, layer, cache, key_mask)
        if train_kernels.blas_usable(x):  # training on a CPU: the same function as one fused kernel
            norm, mlp = self.post_attention_layernorm, self.mlp
            return train_kernels.residual_mlp(x, norm.weight, mlp.gate_proj.weight, mlp.up_proj.weight,
                                              mlp.down_proj.weight, norm.eps, o, wo)[0]
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """Holds the `model.*` parameters, as Hugging Face's LlamaModel does."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaModel(nn.Module):
    """The decoder with its LM head; `forward(idx)` returns logits (B, T, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self, seed: int) -> None:
        """Deterministic init: N(0, 0.02), output projections scaled by depth (GPT-2 style)."""
        gen = torch.Generator().manual_seed(seed)
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
                continue
            s = std / math.sqrt(2 * self.config.num_hidden_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * s)

    def num_parameters(self) -> int:
        """Counted from the live module; shared (tied) parameters once."""
        return sum(p.numel() for p in self.parameters())

    def _rope_tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin for every position, computed once per device (never saved)."""
        tables = self.__dict__.setdefault("_rope", {})
        key = str(device)
        if key not in tables:
            positions = torch.arange(self.config.max_position_embeddings)
            cos, sin = rope_cache(self.config, positions)
            tables[key] = (cos[:, None].to(device), signed_sin(sin)[:, None].to(device))  # (P, 1, head_dim)
        return tables[key]

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, attention_mask: torch.Tensor | None = None,
                head: bool = True) -> torch.Tensor:
        """Logits for `idx` (the final hidden states with head=False: a trainer that fuses the head
        with its loss still calls forward, which a DDP wrapper needs); `attention_mask` (B, past+T,
        1 = real token) supports left padding: padded keys are hidden and each row's positions
        count only its real tokens."""
        h = self.hidden(idx, cache, attention_mask)
        return self.lm_head(h) if head else h

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The final-norm hidden states (B, T, hidden): a prompt's prefill needs the head only at its last position."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.max_position_embeddings:
            raise ShiptwoError(
                f"sequence of {start + T} tokens exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        cos_all, sin_all = self._rope_tables(idx.device)
        key_mask = None
        if attention_mask is None:
            cos, sin = cos_all[start : start + T], sin_all[start : start + T]  # (T, 1, head_dim)
        else:
            if tuple(attention_mask.shape) != (B, start + T):
                raise ShiptwoError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, start + T)}")
            key_mask = attention_mask.bool()
            positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:]
            cos, sin = cos_all[positions], sin_all[positions]
        emb = self.model.embed_tokens.weight
        if torch.is_grad_enabled() and train_kernels.usable(emb):  # training: the kernel's gather and its backward
            x = train_kernels.embedding(emb, idx)
        else:
            x = self.model.embed_tokens(idx)
        for n, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, n, cache, key_mask)
        if cache is not None:
            cache.length += T
        return self.model.norm(x)

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        """The Hugging Face-named tensors to save: `lm_head.weight` omitted when tied."""
        sd = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

    def load_tensors(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint", assign: bool = False) -> None:
        """Load Hugging Face-named tensors, strictly: a missing, extra or misshapen tensor is an error.
        `assign` makes the parameters these tensors (for a model built on the meta device) instead of copying."""
        self.config.check_tensors(tensors, source)
        if assign:  # the module holds these very tensors (float32, contiguous): no copy of the weights
            sd = {k: v.float().contiguous() for k, v in tensors.items()}
        else:
            sd = dict(tensors)
        if self.config.tie_word_embeddings:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        self.load_state_dict(sd, strict=True, assign=assign)
        if assign and self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # one Parameter, as built
