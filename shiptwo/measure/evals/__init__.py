"""Evals: HumanEval in a sandbox, python validity, loss on a split."""
