"""qa's bounds come from the spec: a qa criterion's parameters, never a default in code."""

from __future__ import annotations

import pytest

from shiptwo.checks.qa import qa_config
from shiptwo.errors import ShiptwoError
from shiptwo.harness.spec import load_spec


def test_bounds_are_the_criterions_parameters_for_the_profile():
    crit = load_spec().criterion("AC-SHIP2-006")
    cfg = qa_config(crit, "default", min_decode_tok_s=5.0, parity_tol=1e-3, parity_greedy_steps=32)
    for name in ("golden_min_pass", "quant_max_kl", "quant_min_top1", "quant_min_golden_unchanged", "quant_golden_tokens"):
        assert getattr(cfg, name) == crit.param(name, "default")
    assert cfg.profile == "default" and cfg.min_decode_tok_s == 5.0 and cfg.reference is None


def test_a_bound_the_spec_does_not_give_is_an_error_naming_the_criterion():
    with pytest.raises(ShiptwoError, match=r"AC-SHIP2-001: qa bound\(s\) .*golden_min_pass"):
        qa_config(load_spec().criterion("AC-SHIP2-001"), "default", min_decode_tok_s=5.0, parity_tol=1e-3, parity_greedy_steps=32)
