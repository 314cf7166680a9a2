"""`spec check` warns, naming the id, when a band is finer than its sample count can resolve."""

from __future__ import annotations

import pytest

from shiptwo.cli import main
from shiptwo.harness.resolution import min_band, resolution_warnings, samples_needed
from shiptwo.harness.spec import load_spec, validate_file

SPEC = """\
models:
  model1: {name: MODEL-1, required: all}
criteria:
  - id: AC-S1-005
    model: model1
    title: HumanEval reproduces the reference within noise
    metric: humaneval_pass_at_1_abs_diff
    comparison: "<="
    threshold: 1.2
    unit: points
    class: optimization
    sample_count: {smoke: 8, default: 164, full: 164}
  - {id: AC-S1-006, model: model1, title: pass rate, metric: pass_at_1, comparison: ">=", threshold: 30, unit: "%",
     class: optimization, sample_count: 164, change: {max_regression: 10}}
  - {id: AC-S1-007, model: model1, title: pass rate, metric: pass_at_1, comparison: ">=", threshold: 30, unit: "%",
     class: optimization, sample_count: 164, change: {max_regression: {relative: 0.05}, blocking: true}}
  - {id: AC-S1-008, model: model1, title: no count, metric: diff, comparison: "<=", threshold: 1.2, unit: points,
     class: optimization}
"""


def test_band_arithmetic_matches_the_issue():
    # issue 13: the standard error at p = 0.5 on 164 problems is 3.9 points, so a resolvable band is ~7.8
    assert min_band(164) == pytest.approx(2 * 3.904, abs=1e-2)
    assert samples_needed(1.2) == 6945  # (2 * 100 / 1.2)^2 * 0.25
    assert min_band(samples_needed(1.2)) <= 1.2


def test_warnings_name_the_id_and_suggest_the_minimum_band(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    warnings = resolution_warnings(load_spec(path))
    assert len(warnings) == 3, warnings
    small, full, relative = warnings
    assert small.startswith(f"{path}:4: AC-S1-005: warning: threshold 1.2 points is tighter than 8 samples resolve (profile smoke")
    assert "profile default, full: 2 standard errors = 7.8 points" in full and "at least 7.8 points or at least 6945 samples" in full
    assert "AC-S1-007: warning: change.max_regression (relative, 0.05 of 30) 1.5 points" in relative
    assert not any("AC-S1-006" in w or "AC-S1-008" in w for w in warnings)  # 10 points resolves; no count: no claim


def test_sample_count_is_validated(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("sample_count: 164, change: {max_regression: 10}", "sample_count: 0, change: {max_regression: 10}"))
    _, defects = validate_file(path)
    assert any("AC-S1-006" in str(d) and "'sample_count' must be a positive integer" in str(d) for d in defects)


def test_cli_spec_check_prints_warnings_and_still_passes(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    assert main(["spec", "check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "OK, 4 criteria" in captured.out
    assert captured.err.count("warning:") == 3 and "AC-S1-005" in captured.err
