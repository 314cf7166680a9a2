"""Spec validation: a table of defects, each named by file, line and id; legs, parameters, release rules; the real spec is clean."""

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


def _rm(line: str):
    return lambda t: t.replace(line, "")


def _sub(old: str, new: str):
    return lambda t: t.replace(old, new, 1)


LEGS = """    legs:
      - {metric: top1, comparison: ">=", threshold: 0.9, unit: share, judged_on: lower_95}
"""
PARAMS = "    parameters:\n      tol: 1.0e-4\n"
AFTER_T1 = "    class: infrastructure\n"  # last line of AC-T1-001: extra keys go after it


# (case, edit of VALID, needle on the defect's line (occurrence), id, message fragment)
DEFECTS = [
    ("duplicate id", _sub("id: AC-T2-002", "id: AC-T2-001"), ("id: AC-T2-001", 2), "AC-T2-001", "duplicate id"),
    ("unknown model", _sub("model: model1", "model: model9"), ("model9", 1), "AC-T1-001", "unknown model 'model9'"),
    ("unknown class", _sub("class: packaging", "class: vibes"), ("vibes", 1), "AC-T2-001", "unknown class 'vibes'"),
    ("bad comparison", _sub('comparison: "<="', 'comparison: "<"'), ('comparison: "<"', 1), "AC-T2-002", "bad comparison '<'"),
    ("missing threshold", _rm("    threshold: 30\n"), ("id: AC-T1-001", 1), "AC-T1-001", "missing 'threshold'"),
    ("non-numeric threshold", _sub("threshold: 30", "threshold: fast"), ("fast", 1), "AC-T1-001", "non-numeric threshold"),
    ("threshold missing a profile", _sub("{smoke: 10, default: 5, full: 2.2}", "{smoke: 10, default: 5}"), ("smoke: 10", 1),
     "AC-T2-002", "threshold missing for profile 'full'"),
    ("per-profile threshold without rationale", _rm("    rationale: CPU profiles cannot reach 2.2\n"), ("smoke: 10", 1),
     "AC-T2-002", "per-profile threshold needs a 'rationale'"),
    ("dependency on unknown id", _sub("depends_on: [AC-T2-001]", "depends_on: [AC-T2-999]"), ("AC-T2-999", 1),
     "AC-T2-002", "depends on unknown id 'AC-T2-999'"),
    ("self dependency", _sub("depends_on: [AC-T2-001]", "depends_on: [AC-T2-002]"), ("AC-T2-002]", 1),
     "AC-T2-002", "dependency cycle: AC-T2-002 -> AC-T2-002"),
    ("dependency cycle", _sub("    class: packaging\n", "    class: packaging\n    depends_on: [AC-T2-002]\n"),
     ("depends_on: [AC-T2-002]", 1), "AC-T2-001", "dependency cycle: AC-T2-001 -> AC-T2-002 -> AC-T2-001"),
    ("status field", _sub("    unit: tok/s\n", "    unit: tok/s\n    status: PASS\n"), ("status: PASS", 1),
     "AC-T1-001", "'status' field is forbidden"),
    ("required id of another model", _sub("required: [AC-T2-001]", "required: [AC-T1-001]"), ("required:", 1),
     "model2", "required id 'AC-T1-001' is not a criterion of this model"),
    ("required neither all nor a list", _sub("required: [AC-T2-001]", "required: most"), ("required:", 1),
     "model2", "'required' must be 'all' or a list of ids"),
    ("unknown release profile", _sub("min_ship_pct: 50\n", "min_ship_pct: 50\n    release_profiles: [huge]\n"),
     ("release_profiles", 1), "model2", "'release_profiles' must be a non-empty list"),
    ("unknown criterion key", _sub(AFTER_T1, AFTER_T1 + "    colour: blue\n"), ("colour", 1), "AC-T1-001", "unknown key 'colour'"),
    ("leg without threshold", _sub(AFTER_T1, AFTER_T1 + "    legs:\n      - {metric: kl, comparison: '<=', unit: nats}\n"),
     ("metric: kl", 1), "AC-T1-001", "legs[0]: missing 'threshold'"),
    ("leg with a bad comparison", _sub(AFTER_T1, AFTER_T1 + LEGS.replace('">="', '">"')), ("metric: top1", 1),
     "AC-T1-001", "legs[0]: bad comparison '>'"),
    ("leg judged on an unknown bound", _sub(AFTER_T1, AFTER_T1 + LEGS.replace("lower_95", "lower_99")), ("metric: top1", 1),
     "AC-T1-001", "legs[0]: bad judged_on 'lower_99'"),
    ("leg repeating the primary metric", _sub(AFTER_T1, AFTER_T1 + LEGS.replace("top1", "tps")), ("metric: tps,", 1),
     "AC-T1-001", "legs[0]: metric 'tps' already names a leg"),
    ("leg with an unknown key", _sub(AFTER_T1, AFTER_T1 + LEGS.replace("unit: share", "unit: share, weight: 2")), ("metric: top1", 1),
     "AC-T1-001", "unknown legs[0] key 'weight'"),
    ("per-profile leg threshold without rationale",
     _sub(AFTER_T1, AFTER_T1 + LEGS.replace("threshold: 0.9", "threshold: {smoke: 0.5, default: 0.8, full: 0.9}")),
     ("metric: top1", 1), "AC-T1-001", "legs[0]: per-profile threshold needs a 'rationale'"),
    ("parameter with a bad name", _sub(AFTER_T1, AFTER_T1 + PARAMS.replace("tol:", "Tol:")), ("Tol:", 1),
     "AC-T1-001", "parameter name 'Tol' must match"),
    ("parameter mapping missing a profile", _sub(AFTER_T1, AFTER_T1 + PARAMS.replace("1.0e-4", "{smoke: 1, default: 2}")),
     ("tol:", 1), "AC-T1-001", "parameter 'tol': a mapping must give exactly the profiles"),
    ("parameter of a nested mapping", _sub(AFTER_T1, AFTER_T1 + PARAMS.replace("1.0e-4", "{smoke: {a: 1}, default: 1, full: 1}")),
     ("tol:", 1), "AC-T1-001", "parameter 'tol': value {'a': 1} must be a number"),
    ("parameter YAML reads as a string", _sub(AFTER_T1, AFTER_T1 + PARAMS.replace("1.0e-4", "1.0e4")), ("tol:", 1),
     "AC-T1-001", "parameter 'tol': '1.0e4' is read as a string, not a number (YAML needs a signed exponent: write 1.0e+04)"),
    ("negative effort", _sub(AFTER_T1, AFTER_T1 + "    effort: -1\n"), ("effort", 1), "AC-T1-001", "'effort' must be a positive number"),
    ("change without max_regression", _sub(AFTER_T1, AFTER_T1 + "    change: {blocking: true}\n"), ("change:", 1),
     "AC-T1-001", "change.max_regression must be a number >= 0"),
    ("change with a bad relative", _sub(AFTER_T1, AFTER_T1 + "    change: {max_regression: {relative: -0.1}}\n"), ("change:", 1),
     "AC-T1-001", "change.max_regression must be a number >= 0"),
    ("samples with an unknown statistic", _sub(AFTER_T1, AFTER_T1 + "    samples: {statistic: median}\n"), ("samples:", 1),
     "AC-T1-001", "samples.statistic must be one of"),
    ("samples naming no leg", _sub(AFTER_T1, AFTER_T1 + "    samples: {statistic: mean, metric: kl}\n"), ("samples:", 1),
     "AC-T1-001", "samples.metric 'kl' names no leg"),
]


@pytest.mark.parametrize("edit, needle, cid, message", [pytest.param(*d[1:], id=d[0]) for d in DEFECTS])
def test_each_defect_names_file_line_and_id(tmp_path, edit, needle, cid, message):
    text = edit(VALID)
    assert text != VALID, "the edit must change the spec"
    expected = f"{tmp_path / 'spec.yaml'}:{_line_of(text, *needle)}: {cid}: {message}"
    defects = _defects(tmp_path, text)
    assert any(d.startswith(expected) for d in defects), (expected, defects)


def test_legs_parameters_effort_change_samples_load(tmp_path):
    extra = (LEGS + PARAMS + "      label: {smoke: a, default: b, full: c}\n    effort: 2.5\n"
             "    change: {max_regression: {relative: 0.05}, blocking: true}\n    samples: {statistic: pass_pct, recheck: humaneval}\n")
    spec = load_spec(_write(tmp_path, VALID.replace(AFTER_T1, AFTER_T1 + extra)))
    c = spec.criterion("AC-T1-001")
    assert [g.metric for g in c.legs] == ["tps", "top1"] and c.legs[1].judged_on == "lower_95"
    assert c.leg("top1").threshold_for("smoke") == 0.9 and c.legs[0].judged_on == "point"
    assert c.param("tol", "default") == 1e-4 and c.param("label", "full") == "c"
    with pytest.raises(ShiptwoError, match="AC-T1-001: no parameter 'nope'"):
        c.param("nope", "default")
    assert c.effort == 2.5 and c.change.relative and c.change.max_regression == 0.05 and c.change.blocking
    assert c.samples.statistic == "pass_pct" and c.samples.recheck == "humaneval"
    top1 = c.leg("top1")
    assert top1.judged_value(0.95, (0.85, 0.99)) == 0.85 and not top1.holds(0.85, "default")
    assert top1.judged_value(0.95, None) is None and not top1.holds(None, "default")


def test_release_rules(tmp_path):
    text = VALID.replace("min_ship_pct: 50\n    required: [AC-T2-001]", "release_profiles: [default, full]\n    required: all")
    spec = load_spec(_write(tmp_path, text))
    m2, m1 = spec.models["model2"], spec.models["model1"]
    assert m2.required_all and m2.release_profiles == ("default", "full")
    assert spec.required_ids("model2") == ("AC-T2-001", "AC-T2-002")
    assert m1.release_profiles == ("full",) and not m1.required_all  # the safe default: only a full run releases


def test_several_cycles_are_each_reported_once(tmp_path):
    text = VALID.replace("    class: packaging\n", "    class: packaging\n    depends_on: [AC-T2-002, AC-T1-001]\n")
    text = text.replace(AFTER_T1, AFTER_T1 + "    depends_on: [AC-T1-001]\n")
    cycles = [d for d in _defects(tmp_path, text) if "dependency cycle" in d]
    assert len(cycles) == 2, cycles
    assert any("AC-T1-001: dependency cycle: AC-T1-001 -> AC-T1-001" in d for d in cycles)


def test_malformed_yaml(tmp_path):
    text = VALID.replace("    title: second\n", "    title: [second\n")
    defects = _defects(tmp_path, text)
    assert len(defects) == 1 and "malformed YAML" in defects[0]
    assert defects[0].startswith(f"{tmp_path / 'spec.yaml'}:")
    assert int(defects[0].split(":")[1]) >= _line_of(text, "[second")
    with pytest.raises(ShiptwoError, match="malformed YAML"):
        load_spec(tmp_path / "spec.yaml")


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


@pytest.mark.parametrize("lookalike", ["AC-T2-𝟎𝟎3", "AC-T2-٠٠3", "AC-T2-００3", '"AC-T2-003\\n"'])
def test_an_id_with_look_alike_digits_or_a_line_break_is_a_defect(tmp_path, lookalike):
    """`\\d` matched any Unicode digit and `$` a final line break: AC-T2-𝟎𝟎1 (mathematical digits) validated
    beside AC-T2-001 and read as the same id in the report; an id ending in a line break broke its table row."""
    text = VALID.replace("  - id: AC-T1-001", f"  - id: {lookalike}")
    defects = _defects(tmp_path, text)
    assert any("id must match" in d for d in defects), defects
