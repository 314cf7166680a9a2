"""Held-out cross-entropy (AC-SHIP2-003) and its per-document breakdown: every document windowed
alone and exactly, the macro mean beside the token-weighted one, and a dominant document named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shiptwo.checks.heldout import breakdown_summary, document_cross_entropy, document_windows
from shiptwo.errors import ShiptwoError
from shiptwo.model.llama import LlamaModel


@pytest.fixture(scope="module")
def model(tiny_config):
    torch.manual_seed(0)
    m = LlamaModel(tiny_config)
    m.init_weights(0)
    return m


def test_no_window_spans_two_documents_and_every_target_counts_once():
    """Lengths around the window's edges (seq_len 4): 1 (no target), 2, 4 (= seq_len: its last target
    would be the next document's first token), 5 (= seq_len + 1), 11."""
    seq_len, pad = 4, 99
    docs = [[10 + d * 100 + i for i in range(n)] for d, n in enumerate((1, 2, 4, 5, 11))]
    stream, mask, spans = document_windows(docs, seq_len, pad)
    assert spans == [(0, 0), (0, 1), (1, 2), (2, 4), (4, 7)]
    assert len(stream) == spans[-1][1] * seq_len + 1
    for d, (first, end) in enumerate(spans):
        targets = []
        for w in range(first, end):
            rows = stream[w * seq_len: w * seq_len + seq_len + 1].tolist()
            ctx = [t for t in rows if t != pad]
            assert all(t // 100 == d for t in ctx[:-1])  # inputs: this document's tokens only
            targets += [t for t, m in zip(rows[1:], mask[w * seq_len + 1: w * seq_len + seq_len + 1]) if m]
        assert targets == docs[d][1:]  # each target but the first token, once, in order
    assert int(mask.sum()) == sum(len(d) - 1 for d in docs)


def _direct_document_loss(model, ids: list[int], seq_len: int) -> tuple[float, int]:
    """Summed CE of one document with no padding and no batching: each window of seq_len from its
    first token run alone, the last one short."""
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, seq_len):
            rows = torch.tensor(ids[start: start + seq_len + 1]).long()[None]
            total += F.cross_entropy(model(rows[:, :-1])[0].float(), rows[0, 1:], reduction="sum").item()
            n += rows.shape[1] - 1
    return total, n


def test_per_document_ce_is_exact_and_token_weights_to_the_overall(model, tiny_tokenizer, tiny_texts):
    seq_len = 16
    docs = [("big.py", tiny_texts[0][:3000]), ("one_char.py", "x"), ("short.py", "def f(): pass\n"),
            ("mid.py", tiny_texts[3][:700]), ("tail.py", tiny_texts[5][:333])]
    r = document_cross_entropy(model, tiny_tokenizer, docs, seq_len, batch=3)
    by_name = {row["document"]: row for row in r["documents"]}
    ref_sum = ref_targets = 0
    for name, text in docs:
        s, n = _direct_document_loss(model, [*tiny_tokenizer.encode(text), tiny_tokenizer.eot_id], seq_len)
        assert by_name[name]["targets"] == n and by_name[name]["cross_entropy"] == pytest.approx(s / n, rel=1e-5)
        ref_sum, ref_targets = ref_sum + s, ref_targets + n
    rows = r["documents"]
    assert r["targets"] == ref_targets == sum(row["targets"] for row in rows)
    # token-weighted mean of the per-document CEs == the overall CE under per-document windowing
    weighted = sum(row["targets"] * row["cross_entropy"] for row in rows) / r["targets"]
    assert r["token_weighted"] == pytest.approx(weighted, rel=1e-9) == pytest.approx(ref_sum / ref_targets, rel=1e-5)
    assert r["macro"] == pytest.approx(sum(row["cross_entropy"] for row in rows) / len(rows), rel=1e-9)
    lo, hi = r["macro_interval"]
    assert lo <= r["macro"] <= hi and r["token_weighted_interval"][0] <= r["token_weighted"] <= r["token_weighted_interval"][1]


def test_a_dominant_document_is_reported_as_dominant(model, tiny_tokenizer, tiny_texts):
    """One long document among short ones: it is named with its share of the targets, first in the list."""
    docs = [("a.py", tiny_texts[1][:400]), ("topics.py", tiny_texts[0]), ("b.py", tiny_texts[2][:400]),
            ("c.py", tiny_texts[4][:400])]
    r = document_cross_entropy(model, tiny_tokenizer, docs, 32, batch=8)
    big = r["largest"]
    assert big["document"] == "topics.py" == r["documents"][0]["document"] and r["documents_counted"] == 4
    assert big["target_share"] == pytest.approx(r["documents"][0]["targets"] / r["targets"]) and big["target_share"] > 0.8
    assert big["cross_entropy"] == r["documents"][0]["cross_entropy"]
    assert f"largest topics.py {big['target_share']:.0%} of targets" in breakdown_summary(r)


def test_a_split_with_no_target_is_refused(model, tiny_tokenizer):
    with pytest.raises(ShiptwoError, match="none of 2 has a target"):
        document_cross_entropy(model, tiny_tokenizer, [("empty.py", ""), ("blank.py", "")], 16, 2)
    one = document_cross_entropy(model, tiny_tokenizer, [("empty.py", ""), ("x.py", "x = 1\n")], 16, 2)
    assert one["documents_without_targets"] == ["empty.py"] and one["macro_interval"] is None
