"""Measurements on artifacts: qa, bench, the sandbox and the evals."""
