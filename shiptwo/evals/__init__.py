"""Evaluations of a model artifact: held-out loss, Python validity of completions, HumanEval."""
