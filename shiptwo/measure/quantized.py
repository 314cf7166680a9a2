"""A quantized GGUF against its unquantized reference, the way llama.cpp's perplexity tool compares
a quantization with its base model: per-position KL divergence and top-1 agreement of the next-token
distributions over a fixed text, plus the share of golden prompts whose greedy continuation is
unchanged. The quantized file runs in llama.cpp (as it will be served); the reference runs in our
runtime on its F32 weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_load import read_gguf
from shiptwo.measure.golden import GoldenSet, served_prompts
from shiptwo.model.checkpoint import Checkpoint
from shiptwo.model.generate import SamplingConfig, generate_batch
from shiptwo.runtimes.llamacpp import llamacpp_greedy, llamacpp_logits, llamacpp_tokenize, load_llama

KL_WINDOW = 256  # tokens per scored window of the reference text (capped by the model's context)


def is_quantized(gguf_path: str | Path) -> bool:
    """Whether any tensor of the GGUF is stored in a type other than F32 (a lossy encoding)."""
    import gguf

    return any(t.tensor_type != gguf.GGMLQuantizationType.F32 for t in read_gguf(gguf_path).reader.tensors)


@dataclass
class QuantComparison:
    mean_kl: float  # nats per position, KL(reference || quantized)
    max_kl: float
    top1_agreement: float  # share of positions whose argmax agrees
    positions: int
    golden_unchanged: float  # share of golden prompts whose greedy continuation is identical
    golden_prompts: int
    golden_tokens: int  # greedy tokens compared per golden prompt (the bound given, capped by the context)
    tokenizer_agrees: bool  # llama.cpp tokenizes the reference text into the reference's ids

    def to_dict(self) -> dict:
        return asdict(self)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_and_top1(ref_logits: np.ndarray, quant_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: KL(P_ref || P_quant) in nats, and whether the two argmaxes agree."""
    lp, lq = _log_softmax(ref_logits), _log_softmax(quant_logits)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return np.maximum(kl, 0.0), ref_logits.argmax(-1) == quant_logits.argmax(-1)


@torch.inference_mode()
def compare_quantized(reference: Checkpoint, gguf_path: str | Path, golden: GoldenSet, golden_tokens: int) -> QuantComparison:
    """Score the quantized GGUF against `reference` over golden.reference_text and the golden prompts
    (their first `golden_tokens` greedy tokens, the qa criterion's bound, capped by the context)."""
    model, tok = reference.build_model(), reference.tokenizer()
    ctx = min(reference.config.max_position_embeddings, KL_WINDOW)
    ids = tok.encode(golden.reference_text)
    if len(ids) < 2:
        raise ShiptwoError(f"{golden.path}: reference_text encodes to fewer than 2 tokens")
    llm = load_llama(gguf_path, ctx)
    try:
        if llm.n_vocab() != reference.config.vocab_size:
            raise ShiptwoError(f"{gguf_path}: llama.cpp vocab {llm.n_vocab()} != reference vocab {reference.config.vocab_size}")
        same_ids = llamacpp_tokenize(llm, golden.reference_text) == ids
        kls, agree = [], []
        for start in range(0, len(ids) - 1, ctx):
            window = ids[start:start + ctx]
            if len(window) < 2:
                break
            ours = model(torch.tensor([window]))[0].float().numpy()
            kl, top1 = kl_and_top1(ours, llamacpp_logits(llm, window))
            kls.append(kl)
            agree.append(top1)
        kl_all, agree_all = np.concatenate(kls), np.concatenate(agree)
        # as the model is served: a chat model's greedy answer, not its ramble on raw code
        prompts = [tok.encode(t) for t in served_prompts(reference, golden, [p.prompt for p in golden.prompts])]
        steps = min(golden_tokens, ctx - max(len(p) for p in prompts))
        ours_gen = [c.token_ids for c in generate_batch(model, tok, prompts, SamplingConfig(max_new_tokens=steps))]
        unchanged = sum(llamacpp_greedy(llm, p, len(o)) == o for p, o in zip(prompts, ours_gen))
    finally:
        llm.close()
    return QuantComparison(mean_kl=float(kl_all.mean()), max_kl=float(kl_all.max()),
                           top1_agreement=float(agree_all.mean()), positions=int(kl_all.size),
                           golden_unchanged=unchanged / len(golden.prompts), golden_prompts=len(golden.prompts), golden_tokens=steps,
                           tokenizer_agrees=same_ids)
