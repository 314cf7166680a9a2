"""Acceptance metrics: each measures an artifact from outside; thresholds come in as arguments."""
