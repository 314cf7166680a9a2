"""Keeping the held-out splits honest: a near-copy joins the split whose documents it copies.

A validation or test document whose n-grams mostly occur in the train split would make the
held-out loss optimistic, so it goes to train (move_near_duplicates). A test document whose
n-grams mostly occur in the validation split, or a test document holding most of a validation
document, makes the test figure depend on the split the best checkpoint was chosen on; the
test split is the untouched estimate, so such test documents join validation
(join_held_out_near_copies): they stay held out of training, and train is not changed, so the
first rule's result stands. Both rules use shiptwo.data.overlap's n-grams and share, repeat until
nothing moves, and record each move with its figures.
"""

from __future__ import annotations

import logging

import numpy as np

from shiptwo.data.overlap import OverlapIndex, distinct_sorted, shingles

log = logging.getLogger(__name__)

HELD_OUT = ("validation", "test")
# splits: {"train" | "validation" | "test": [documents]}, each document with a .path and a .text
# (shiptwo.data.corpus.Document, which imports this module)


def move_near_duplicates(splits: dict[str, list], share: float, ngram: int) -> dict:
    """Move each validation/test document whose n-grams mostly occur in train into train, in place,
    and return the record of it. Repeated until none is left, since a moved document joins the
    reference: the result is the same whatever the order (a document's share only grows)."""
    held = [(s, d) for s in HELD_OUT for d in splits[s]]
    index = OverlapIndex([d.text for _, d in held], ngram)
    for d in splits["train"]:
        index.add_reference_text(d.text)
    moved: list[dict] = []
    pending, rnd = set(range(len(held))), 0
    while True:
        rnd += 1
        new = sorted(i for i in pending if index.ngrams(i) and index.share(i) >= share)
        if not new:
            break
        for i in new:  # shares first, then the references: a round is judged against one train split
            s, d = held[i]
            moved.append({"path": d.path, "from": s, "ngrams": index.ngrams(i), "in_train": index.in_reference(i),
                          "share": round(index.share(i), 4), "round": rnd})
        for i in new:
            pending.discard(i)
            index.add_reference(index.query[i])
    gone = {m["path"] for m in moved}
    for s in HELD_OUT:
        splits[s] = [d for d in splits[s] if d.path not in gone]
    splits["train"] = sorted(splits["train"] + [d for _, d in held if d.path in gone], key=lambda d: d.path)
    if moved:
        log.info("corpus: %d held-out near-duplicate(s) of the train split moved to train: %s", len(moved),
                 ", ".join(f"{m['path']} ({m['from']}, {m['share']:.0%})" for m in moved))
    return {
        "rule": f"a validation/test document with >= {share:.0%} of its {ngram}-token "
                "n-grams in the train split moves to train (repeated until none does; shiptwo.data.overlap)",
        "ngram_tokens": ngram, "share_at_least": share,
        "held_out_checked": len(held), "too_short_to_judge": sum(1 for i in range(len(held)) if not index.ngrams(i)),
        "moved_to_train": len(moved), "documents": moved,
    }


def join_held_out_near_copies(splits: dict[str, list], share: float, ngram: int) -> dict:
    """Move into validation, in place, each test document with >= the share of its n-grams in the
    validation split and, for each validation document with >= the share of its n-grams in the test
    split, the test documents holding most of them (largest first, until it falls under the share);
    repeated until neither holds. Returns the record of it."""
    n, cut = ngram, share
    cache: dict[str, int] = {}
    grams = {id(d): shingles(d.text, n, cache) for s in HELD_OUT for d in splits[s]}
    moved: list[dict] = []
    rnd = 0
    while True:
        rnd += 1
        val_keys = _keys(grams[id(d)] for d in splits["validation"])
        copies = [(d, _found(grams[id(d)], val_keys)) for d in splits["test"] if len(grams[id(d)])]
        joining = [(d, f, "copies the validation split") for d, f in copies if f / len(grams[id(d)]) >= cut]
        if not joining:
            joining = _holders_of_validation_documents(splits, grams, cut)
        if not joining:
            break
        for d, found, why in joining:
            g = grams[id(d)]
            moved.append({"path": d.path, "from": "test", "to": "validation", "ngrams": len(g), "in_other": found,
                          "share": round(found / len(g), 4) if len(g) else 0.0, "because": why, "round": rnd})
        gone = {id(d) for d, _, _ in joining}
        splits["validation"] = sorted(splits["validation"] + [d for d, _, _ in joining], key=lambda d: d.path)
        splits["test"] = [d for d in splits["test"] if id(d) not in gone]
    if moved:
        log.info("corpus: %d test document(s) near-copying the validation split moved to validation: %s", len(moved),
                 ", ".join(f"{m['path']} ({m['because']})" for m in moved))
    return {
        "rule": f"a test document with >= {cut:.0%} of its {n}-token n-grams in the validation split, or holding most of "
                f"a validation document that has >= {cut:.0%} of its n-grams in the test split, moves to validation "
                "(repeated until neither holds; shiptwo.data.near_copies)",
        "ngram_tokens": n, "share_at_least": cut, "moved_to_validation": len(moved), "documents": moved,
    }


def _holders_of_validation_documents(splits: dict, grams: dict, cut: float) -> list[tuple]:
    """For each validation document (in path order) with >= cut of its n-grams in the test split, the
    test documents to move so that it falls under the cut: the largest holders of its n-grams first."""
    test = list(splits["test"])
    test_keys = _keys(grams[id(d)] for d in test)  # recomputed only when a document leaves
    chosen: list[tuple] = []
    for v in splits["validation"]:
        g = grams[id(v)]
        if not len(g) or _found(g, test_keys) < cut * len(g):
            continue
        holders = sorted(test, key=lambda d: (-_found(g, _keys([grams[id(d)]])), d.path))
        for d in holders:
            test.remove(d)
            chosen.append((d, _found(grams[id(d)], _keys([g])), f"holds validation document {v.path}"))
            test_keys = _keys(grams[id(t)] for t in test)
            if _found(g, test_keys) < cut * len(g):
                break
    return chosen


def _keys(arrays) -> np.ndarray:
    return distinct_sorted([a for a in arrays if len(a)])


def _found(g: np.ndarray, keys: np.ndarray) -> int:
    """How many of the n-gram positions in `g` have their n-gram among `keys` (sorted, unique)."""
    if not len(g) or not len(keys):
        return 0
    pos = np.minimum(np.searchsorted(keys, g), len(keys) - 1)
    return int((keys[pos] == g).sum())
