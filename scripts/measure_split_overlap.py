"""Measure how much of MODEL-2's held-out splits, and of HumanEval, occurs in its train split.

Loads the profile's corpus as the build does (shiptwo.data.corpus.load_corpus; nothing is trained)
and counts, for every validation and test document and every HumanEval problem (prompt plus
canonical solution), its 13-token n-grams that occur in the train split (shiptwo.data.overlap).
Exhaustive counts, no sampling. `--split-by-path` first puts back the held-out documents the
near-duplicate rule moved to train (the corpus manifest names each and its split), so it measures
the split the path hash alone makes: what that rule acted on.

    .venv/bin/python scripts/measure_split_overlap.py --profile default --split-by-path -o overlap.json
"""

from __future__ import annotations

import argparse
import json
import sys

from shiptwo.checks.leakage import split_overlap, texts_overlap
from shiptwo.data.corpus import Corpus, load_corpus
from shiptwo.data.overlap import NEAR_DUPLICATE_SHARE, NGRAM
from shiptwo.fileio import atomic_write_json
from shiptwo.measure.evals.humaneval import load_problems
from shiptwo.training.recipes import load_recipe


def split_by_path(corpus: Corpus) -> Corpus:
    """The corpus with every document the near-duplicate rule moved back in the split its path gives."""
    back = {m["path"]: m["from"] for m in corpus.near_duplicates.get("documents", [])}
    splits = {s: [d for d in docs if d.path not in back] for s, docs in corpus.splits.items()}
    for d in corpus.splits["train"]:
        if d.path in back:
            splits[back[d.path]].append(d)
    for s in splits:
        splits[s].sort(key=lambda d: d.path)
    return Corpus(splits, corpus.data_source, corpus.data_license)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--split-by-path", action="store_true", help="measure the split before the near-duplicate rule")
    ap.add_argument("--ngram", type=int, default=NGRAM)
    ap.add_argument("--share", type=float, default=NEAR_DUPLICATE_SHARE)
    ap.add_argument("-o", "--out", help="write the figures here as JSON (else stdout)")
    args = ap.parse_args(argv)
    corpus = load_corpus(load_recipe("model2", args.profile).corpus)
    if args.split_by_path:
        corpus = split_by_path(corpus)
    problems = load_problems()
    out = {"profile": args.profile, "split_by_path": args.split_by_path,
           "documents": {s: len(docs) for s, docs in corpus.splits.items()}}
    for s in ("validation", "test"):
        out[s] = split_overlap(corpus, s, args.share, args.ngram)
    for name, text in (("humaneval", lambda p: p["prompt"] + p["canonical_solution"]),
                       ("humaneval_prompts", lambda p: p["prompt"]), ("humaneval_solutions", lambda p: p["canonical_solution"])):
        out[name] = texts_overlap(corpus, [(tid, text(p)) for tid, p in problems.items()], args.share, args.ngram)
    for name, f in out.items():
        if isinstance(f, dict) and "ngrams" in f:
            print(f"{name}: {f['ngrams_in_reference']} of {f['ngrams']} {args.ngram}-grams in train "
                  f"({f['ngram_share']:.2%}); {f['near_duplicates']} of {f['documents_judged']} documents >= "
                  f"{args.share:.0%} ({f['documents_too_short']} too short to judge)", file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, out)
    else:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
