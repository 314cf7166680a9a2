"""Held-out cross-entropy of a checkpoint (AC-SHIP2-003), document by document.

Each document is windowed alone, as lm-evaluation-harness scores a corpus's perplexity: each
document's CE is exact (no window shares two documents, every target is counted once) and the
split's figure is token-weighted over them, with a bootstrap interval over documents, the sampled
unit (a split's windows are cut from few documents, so they are not independent samples). Since a
document holding most of the split's targets (the stdlib's `pydoc_data/topics.py`, English prose) is
most of that figure, the document-weighted (macro) mean and the largest one's share go beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from shiptwo import stats
from shiptwo.errors import ShiptwoError

WINDOWING = ("each document (its tokens and end-of-text) alone, in windows of seq_len from its first token, the last "
             "padded and masked; every target but the document's first token counted once, no context across documents")


def document_windows(documents: Sequence[Sequence[int]], seq_len: int,
                     pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """One stream in which no window of seq_len (+1) spans two documents: document d starts at a window
    boundary and takes ceil(len/seq_len) windows, so the token after its last window's targets is
    padding or the next document's first token, masked either way (a causal model's logits at a
    position never see later tokens, so the padding changes nothing it counts). Returns the stream,
    its target mask (1 on each document token but its first) and each document's [first, end) windows.
    A document of fewer than 2 tokens has no target and no window."""
    stream, mask, spans, window = [], [], [], 0
    for doc in documents:
        k = -(-len(doc) // seq_len) if len(doc) >= 2 else 0
        pad = k * seq_len - len(doc) if k else 0
        stream += [*doc, *([pad_id] * pad)] if k else []
        mask += [0, *([1] * (len(doc) - 1)), *([0] * pad)] if k else []
        spans.append((window, window + k))
        window += k
    stream.append(pad_id)  # the last window's final target
    mask.append(0)
    return torch.tensor(stream, dtype=torch.int32), torch.tensor(mask, dtype=torch.int32), spans


def document_cross_entropy(model: torch.nn.Module, tokenizer, documents: Sequence[tuple[str, str]], seq_len: int,
                           batch: int) -> dict:
    """CE of each (name, text) document windowed alone (document_windows), and what the split's CE is
    made of: the token-weighted mean (equal to the per-document windowing's overall CE) and the
    document-weighted (macro) mean, each with a 95% bootstrap interval over documents, and the
    largest document's share of the targets; the evidence's `documents` lists them all, largest first."""
    from shiptwo.training.objective import window_losses

    t0 = time.perf_counter()
    encoded = [[*ids, tokenizer.eot_id] for ids in tokenizer.encode_batch([text for _, text in documents])]
    if not any(len(ids) >= 2 for ids in encoded):
        raise ShiptwoError(f"held-out documents: none of {len(encoded)} has a target (a document needs 2 tokens or more)")
    stream, mask, spans = document_windows(encoded, seq_len, tokenizer.eot_id)
    sums, counts = window_losses(model, stream, seq_len, batch, mask=mask)
    rows = []
    for (name, _), (first, end) in zip(documents, spans):
        s, c = sum(sums[first:end]), sum(counts[first:end])
        rows.append({"document": name, "targets": c, "cross_entropy": s / c if c else None, "summed_nats": s})
    counted = [r for r in rows if r["targets"]]
    total = sum(r["targets"] for r in counted)
    per_doc = [r["cross_entropy"] for r in counted]
    spread = len(counted) >= 2  # one document has no spread to resample
    largest = max(counted, key=lambda r: r["targets"])
    return {
        "windowing": WINDOWING, "documents_counted": len(counted),
        "documents_without_targets": [r["document"] for r in rows if not r["targets"]], "targets": total,
        "token_weighted": sum(r["summed_nats"] for r in counted) / total,
        "token_weighted_interval": stats.cluster_ratio_ci([r["summed_nats"] for r in counted],
                                                          [r["targets"] for r in counted]) if spread else None,
        "macro": sum(per_doc) / len(per_doc),
        "macro_interval": stats.bootstrap_ci(per_doc) if spread else None,
        "largest": {"document": largest["document"], "targets": largest["targets"],
                    "target_share": largest["targets"] / total, "cross_entropy": largest["cross_entropy"]},
        "measure_seconds": time.perf_counter() - t0,
        "documents": [{k: r[k] for k in ("document", "targets", "cross_entropy")}
                      for r in sorted(rows, key=lambda r: -r["targets"])],
    }


def breakdown_summary(breakdown: dict) -> str:
    """One short clause for a criterion's summary line: document_cross_entropy's macro mean beside its
    token-weighted one, and the largest document with its share of the targets."""
    def ci(iv):
        return f" (95% {iv[0]:.3f}-{iv[1]:.3f})" if iv else ""

    d, big = breakdown, breakdown["largest"]
    return (f"macro {d['macro']:.3f}{ci(d['macro_interval'])} over {d['documents_counted']} documents, token-weighted "
            f"{d['token_weighted']:.3f}{ci(d['token_weighted_interval'])}; largest {big['document']} "
            f"{big['target_share']:.0%} of targets (CE {big['cross_entropy']:.3f})")
