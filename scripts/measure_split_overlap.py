"""Measure how much of MODEL-2's held-out splits, and of HumanEval, occurs in its train split.

Loads the profile's corpus as the build does (shiptwo.data.corpus.load_corpus; nothing is trained)
and counts, for every validation and test document, its 13-token n-grams that occur in the train
split and in the other held-out split (shiptwo.checks.leakage, the measure AC-SHIP2-003 uses), and
for every HumanEval problem (prompt plus canonical solution) those in the train split. Exhaustive
counts, no sampling. `--split-by-path` first puts back the documents the near-copy rules moved (the
corpus manifest names each and its split), so it measures the split the path hash alone makes: what
those rules acted on. `--within-corpus` adds the evidence for reading identifiers as one
placeholder: each document against all the others, read as written and read with the placeholder,
and the documents only the placeholder reading puts at or above the share, each with the one
document holding most of its n-grams (a renamed copy has one; unrelated boilerplate does not).

    .venv/bin/python scripts/measure_split_overlap.py --profile default --split-by-path --within-corpus -o overlap.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from shiptwo.checks.leakage import held_out_overlap, texts_overlap
from shiptwo.data.corpus import SPLITS, Corpus, load_corpus
from shiptwo.data.overlap import CODE_TOKEN, NEAR_DUPLICATE_SHARE, NGRAM, code_tokens, normalized, token_shingles
from shiptwo.fileio import atomic_write_json
from shiptwo.measure.evals.humaneval import load_problems
from shiptwo.training.recipes import load_recipe


def split_by_path(corpus: Corpus) -> Corpus:
    """The corpus with every document the near-copy rules moved back in the split its path gives."""
    back = {m["path"]: m["from"] for rule in (corpus.near_duplicates, corpus.held_out_near_copies)
            for m in rule.get("documents", [])}
    splits = {s: [] for s in SPLITS}
    for s in SPLITS:
        for d in corpus.splits[s]:
            splits[back.get(d.path, s)].append(d)
    return Corpus({s: sorted(docs, key=lambda d: d.path) for s, docs in splits.items()}, corpus.data_source,
                  corpus.data_license)


def within_corpus(corpus: Corpus, share: float, n: int) -> dict:
    """Each document's share of n-grams found in any other document, read as written and with the
    identifier placeholder; the documents only the placeholder reading flags, with their best partner."""
    docs = [d for s in SPLITS for d in corpus.splits[s]]
    readings = {"as_written": lambda t: CODE_TOKEN.findall(normalized(t)), "placeholder": code_tokens}
    shares, grams = {}, {}
    for name, read in readings.items():
        cache: dict[str, int] = {}
        g = [token_shingles(read(d.text), n, cache) for d in docs]
        keys, counts = np.unique(np.concatenate([np.unique(x) for x in g if len(x)]), return_counts=True)
        shared = keys[counts >= 2]
        shares[name] = {d.path: float(np.isin(x, shared).mean()) for d, x in zip(docs, g) if len(x)}
        grams[name] = g
    flagged = {name: sorted(p for p, v in s.items() if v >= share) for name, s in shares.items()}
    only = sorted(set(flagged["placeholder"]) - set(flagged["as_written"]), key=lambda p: -shares["placeholder"][p])
    g = dict(zip((d.path for d in docs), grams["placeholder"]))
    rows = []
    for p in only:
        best = max(((float(np.isin(g[p], g[q]).mean()), q) for q in g if q != p and len(g[q])))
        rows.append({"path": p, "ngrams": len(g[p]), "share_as_written": round(shares["as_written"][p], 4),
                     "share_placeholder": round(shares["placeholder"][p], 4), "best_partner": best[1],
                     "best_partner_share": round(best[0], 4)})
    return {"documents_judged": len(shares["placeholder"]), "share_at_least": share, "ngram_tokens": n,
            "flagged_as_written": len(flagged["as_written"]), "flagged_placeholder": len(flagged["placeholder"]),
            "flagged_only_by_placeholder": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--split-by-path", action="store_true", help="measure the split before the near-copy rules")
    ap.add_argument("--within-corpus", action="store_true", help="each document against all others, two readings")
    ap.add_argument("--ngram", type=int, default=NGRAM)
    ap.add_argument("--share", type=float, default=NEAR_DUPLICATE_SHARE)
    ap.add_argument("-o", "--out", help="write the figures here as JSON (else stdout)")
    args = ap.parse_args(argv)
    cfg = load_recipe("model2", args.profile).corpus
    t0 = time.perf_counter()
    corpus = load_corpus(cfg)
    out = {"profile": args.profile, "split_by_path": args.split_by_path, "load_corpus_seconds": round(time.perf_counter() - t0, 2),
           "moved": {"to_train": corpus.near_duplicates["documents"],
                     "to_validation": corpus.held_out_near_copies["documents"]}}
    if args.split_by_path:
        corpus = split_by_path(corpus)
    out["documents"] = {s: len(docs) for s, docs in corpus.splits.items()}
    out.update(held_out_overlap(corpus, args.share, args.ngram))
    problems = load_problems()
    for name, text in (("humaneval", lambda p: p["prompt"] + p["canonical_solution"]),
                       ("humaneval_prompts", lambda p: p["prompt"]), ("humaneval_solutions", lambda p: p["canonical_solution"])):
        out[name] = texts_overlap(corpus, [(tid, text(p)) for tid, p in problems.items()], args.share, args.ngram)
    if args.within_corpus:
        out["within_corpus"] = within_corpus(corpus, args.share, args.ngram)
    for name, f in out.items():
        if isinstance(f, dict) and "ngrams" in f:
            print(f"{name}: {f['ngrams_in_reference']} of {f['ngrams']} {args.ngram}-grams in {f['reference']} "
                  f"({f['ngram_share']:.2%}); {f['near_duplicates']} of {f['documents_judged']} documents >= "
                  f"{args.share:.0%} ({f['documents_too_short']} too short to judge)", file=sys.stderr)
    print(f"load_corpus {out['load_corpus_seconds']} s; moved to train {len(out['moved']['to_train'])}, "
          f"to validation {len(out['moved']['to_validation'])}", file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, out)
    else:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
