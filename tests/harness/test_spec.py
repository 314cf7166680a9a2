"""Spec validation: one test per defect kind, each naming the file, line and id; the real spec is clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.harness.spec import check_spec, load_spec, scan_bindings, strict_defects

REPO = Path(__file__).resolve().parents[2]

VALID = """\
version: 1
models:
  model1:
    name: MODEL-1
    min_ship_pct: 100
  model2:
    name: MODEL-2
    min_ship_pct: 50
    required: [AC-T2-001]
criteria:
  - id: AC-T2-001
    model: model2
    title: first
    metric: defects
    comparison: "=="
    threshold: 0
    unit: defects
    class: packaging
  - id: AC-T2-002
    model: model2
    title: second
    metric: ce
    comparison: "<="
    threshold: {smoke: 10, default: 5, full: 2.2}
    unit: nats
    class: optimization
    depends_on: [AC-T2-001]
    rationale: CPU profiles cannot reach 2.2
  - id: AC-T1-001
    model: model1
    title: third
    metric: tps
    comparison: ">="
    threshold: 30
    unit: tok/s
    weight: 2
    class: infrastructure
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _defects(tmp_path: Path, text: str) -> list[str]:
    outcome = check_spec(_write(tmp_path, text))
    assert outcome.defects, "a defective spec must not validate"
    return [str(d) for d in outcome.defects]


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return lines[occurrence - 1]


def test_valid_spec_loads_with_thresholds_per_profile(tmp_path):
    spec = load_spec(_write(tmp_path, VALID))
    assert list(spec.criteria) == ["AC-T2-001", "AC-T2-002", "AC-T1-001"]
    ce = spec.criterion("AC-T2-002")
    assert ce.threshold_for("full") == 2.2 and ce.threshold_for("smoke") == 10
    assert ce.is_met(4.9, "default") and not ce.is_met(5.1, "default")
    assert not ce.is_met(float("nan"), "default")
    assert spec.criterion("AC-T1-001").weight == 2
    assert spec.models["model2"].required == ("AC-T2-001",)
    assert ce.line == _line_of(VALID, "id: AC-T2-002")


def test_duplicate_id(tmp_path):
    text = VALID.replace("id: AC-T2-002", "id: AC-T2-001")
    defects = _defects(tmp_path, text)
    line = _line_of(text, "id: AC-T2-001", 2)
    assert any(f":{line}: AC-T2-001: duplicate id" in d for d in defects), defects


def test_unknown_model(tmp_path):
    text = VALID.replace("model: model1", "model: model9")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'model9')}: AC-T1-001: unknown model 'model9'" in d for d in defects), defects


def test_unknown_class(tmp_path):
    text = VALID.replace("class: packaging", "class: vibes")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'vibes')}: AC-T2-001: unknown class 'vibes'" in d for d in defects), defects


def test_bad_comparison(tmp_path):
    text = VALID.replace('comparison: "<="', 'comparison: "<"')
    defects = _defects(tmp_path, text)
    line = _line_of(text, 'comparison: "<"')
    assert any(f":{line}: AC-T2-002: bad comparison '<'" in d for d in defects), defects


def test_missing_threshold(tmp_path):
    text = VALID.replace("    threshold: 30\n", "")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'id: AC-T1-001')}: AC-T1-001: missing 'threshold'" in d for d in defects), defects


def test_non_numeric_threshold(tmp_path):
    text = VALID.replace("threshold: 30", "threshold: fast")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'fast')}: AC-T1-001: non-numeric threshold" in d for d in defects), defects


def test_threshold_missing_for_a_profile(tmp_path):
    text = VALID.replace("{smoke: 10, default: 5, full: 2.2}", "{smoke: 10, default: 5}")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'smoke: 10')}: AC-T2-002: threshold missing for profile 'full'" in d for d in defects), defects


def test_per_profile_threshold_needs_rationale(tmp_path):
    text = VALID.replace("    rationale: CPU profiles cannot reach 2.2\n", "")
    assert any("AC-T2-002: per-profile threshold needs a 'rationale'" in d for d in _defects(tmp_path, text))


def test_dependency_on_unknown_id(tmp_path):
    text = VALID.replace("depends_on: [AC-T2-001]", "depends_on: [AC-T2-999]")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'AC-T2-999')}: AC-T2-002: depends on unknown id 'AC-T2-999'" in d for d in defects), defects


def test_dependency_cycle(tmp_path):
    text = VALID.replace("    class: packaging\n", "    class: packaging\n    depends_on: [AC-T2-002]\n")
    defects = _defects(tmp_path, text)
    assert any("dependency cycle" in d and "AC-T2-001" in d and "AC-T2-002" in d for d in defects), defects


def test_self_dependency_is_a_cycle(tmp_path):
    text = VALID.replace("depends_on: [AC-T2-001]", "depends_on: [AC-T2-002]")
    assert any("AC-T2-002: dependency cycle: AC-T2-002 -> AC-T2-002" in d for d in _defects(tmp_path, text))


def test_malformed_yaml(tmp_path):
    text = VALID.replace("    title: second\n", "    title: [second\n")
    defects = _defects(tmp_path, text)
    assert len(defects) == 1 and "malformed YAML" in defects[0]
    assert defects[0].startswith(f"{tmp_path / 'spec.yaml'}:")
    assert int(defects[0].split(":")[1]) >= _line_of(text, "[second")
    with pytest.raises(ShiptwoError, match="malformed YAML"):
        load_spec(tmp_path / "spec.yaml")


def test_status_field_is_rejected(tmp_path):
    text = VALID.replace("    unit: tok/s\n", "    unit: tok/s\n    status: PASS\n")
    defects = _defects(tmp_path, text)
    assert any(f":{_line_of(text, 'status: PASS')}: AC-T1-001: 'status' field is forbidden" in d for d in defects), defects


def test_required_id_of_another_model(tmp_path):
    text = VALID.replace("required: [AC-T2-001]", "required: [AC-T1-001]")
    assert any("model2: required id 'AC-T1-001' is not a criterion of this model" in d for d in _defects(tmp_path, text))


def test_unknown_profile_raises(tmp_path):
    spec = load_spec(_write(tmp_path, VALID))
    with pytest.raises(ShiptwoError, match="AC-T2-002: no threshold for profile 'huge'"):
        spec.criterion("AC-T2-002").threshold_for("huge")


def test_the_real_spec_validates_clean():
    spec = load_spec(REPO / "spec" / "ship-two.yaml")
    ids = set(spec.criteria)
    assert {f"AC-SHIP2-{i:03d}" for i in range(1, 18)} <= ids
    assert {f"AC-SHIP1-{i:03d}" for i in range(1, 11)} <= ids
    assert all(spec.criterion(c).threshold_for(p) is not None for c in ids for p in ("smoke", "default", "full"))


def test_strict_names_unbound_criteria_and_unknown_bindings(tmp_path):
    spec = load_spec(_write(tmp_path, VALID))
    acceptance = tmp_path / "acceptance"
    acceptance.mkdir()
    (acceptance / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.ac('AC-T2-001')\ndef test_a(criterion):\n    criterion.check(0)\n\n"
        "@pytest.mark.ac('AC-T9-001')\ndef test_b(criterion):\n    criterion.check(0)\n"
    )
    defects = [str(d) for d in strict_defects(spec, scan_bindings(acceptance))]
    assert any("AC-T2-002: no bound test" in d for d in defects)
    assert any("AC-T1-001: no bound test" in d for d in defects)
    assert any(f"{acceptance / 'test_x.py'}:7: AC-T9-001: test is bound to an id the spec lacks" in d for d in defects)
    assert not any("AC-T2-001: no bound test" in d for d in defects)


def test_cli_spec_check_exit_codes(tmp_path, capsys):
    good = _write(tmp_path, VALID)
    assert main(["spec", "check", str(good)]) == 0
    assert "OK, 3 criteria" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("class: packaging", "class: vibes").replace("threshold: 30", "threshold: x"))
    assert main(["spec", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(str(bad)) for line in err)
    assert main(["spec", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read spec" in capsys.readouterr().err


def test_cli_strict_fails_on_unbound_criteria(tmp_path, capsys):
    good = _write(tmp_path, VALID)
    acceptance = tmp_path / "acceptance"
    acceptance.mkdir()
    (acceptance / "test_y.py").write_text(
        "import pytest\n" + "".join(
            f"\n@pytest.mark.ac('{cid}')\ndef test_{i}(criterion):\n    criterion.check(0)\n"
            for i, cid in enumerate(["AC-T2-001", "AC-T2-002"])
        )
    )
    assert main(["spec", "check", str(good), "--strict", "--acceptance", str(acceptance)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{good}:{_line_of(VALID, 'id: AC-T1-001')}: AC-T1-001: no bound test in acceptance/"]
    (acceptance / "test_z.py").write_text("import pytest\n\n@pytest.mark.ac('AC-T1-001')\ndef test_z(criterion):\n    criterion.check(0)\n")
    assert main(["spec", "check", str(good), "--strict", "--acceptance", str(acceptance)]) == 0
    assert "strict" in capsys.readouterr().out
