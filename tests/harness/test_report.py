"""The report: golden markdown on a fixed results file, every status, baseline diff, json format, CLI."""

from __future__ import annotations

import json
import re
import os
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.harness.report import build_report, render
from shiptwo.harness.results import load_results
from shiptwo.harness.spec import load_spec

from shiptwo.harness.results import BLOCKED, ERROR, FAIL, NOT_RUN, NO_TEST, PASS, SKIPPED

GOLDEN = Path(__file__).parents[1] / "golden"
BOUND = {"AC-G2-001", "AC-G2-002", "AC-G2-003", "AC-G2-004", "AC-G2-005", "AC-G2-006", "AC-G2-008", "AC-G1-001"}


@pytest.fixture
def golden_dir(monkeypatch):
    """Run from the golden directory so every path in the report is relative and stable."""
    monkeypatch.chdir(GOLDEN)
    return GOLDEN


def _data(baseline: bool = False) -> dict:
    spec = load_spec("spec.yaml")
    old = load_results("baseline.json") if baseline else None
    return build_report(spec, load_results("results.json"), BOUND, old, output_dir=".")


def test_markdown_matches_golden(golden_dir):
    text = render(_data(baseline=True), "md")
    golden = golden_dir / "report.md"
    if os.environ.get("SHIPTWO_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "report changed; rerun with SHIPTWO_UPDATE_GOLDEN=1 and review the diff"


def test_every_status_is_rendered(golden_dir):
    data = _data()
    by_id = {c["id"]: c["status"] for c in data["criteria"]}
    assert by_id == {
        "AC-G2-001": PASS, "AC-G2-002": FAIL, "AC-G2-003": BLOCKED, "AC-G2-004": ERROR,
        "AC-G2-005": SKIPPED, "AC-G2-006": NOT_RUN, "AC-G2-007": NO_TEST, "AC-G2-008": PASS,
        "AC-G1-001": NOT_RUN,
    }
    text = render(data, "md")
    rows: dict[str, str] = {}
    for line in text.splitlines():  # first table row of each id: the criteria table
        if line.startswith("| AC-G"):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert "| SKIPPED (no llama.cpp build on this machine) |" in rows["AC-G2-005"]
    assert "| BLOCKED (own: PASS) |" in rows["AC-G2-003"]
    assert "| NO TEST |" in rows["AC-G2-007"] and "| NOT RUN |" in rows["AC-G2-006"]
    assert "fails \\| with a pipe" in rows["AC-G2-002"]
    assert "**AC-G2-003** blocked by AC-G2-002; own outcome PASS" in text
    assert "| MODEL-1 (`model1`) | **not run** |" in text
    assert "| MODEL-2 (`model2`) | **22.2%** (stale PASS of weight 1.0 not counted) |" in text  # 2 of 9 weight units: the stale PASS of AC-G2-008 is not counted
    assert "<summary><b>data</b>: 1 (AC-G2-002)</summary>" in text and "<b>infrastructure</b>" in text
    assert "PASS †" in rows["AC-G2-008"] and "commit 0ld0ld0ld0ld" in text
    assert "](curves/loss.png)" not in text  # no local image links: they do not render in a PR comment
    assert f"| AC-G2-001 | checkpoint | `artifacts/model.safetensors` | `{'ab' * 32}` |" in text


def test_opportunities_rank_unblocking_first(golden_dir):
    ranked = _data()["opportunities"]
    assert ranked[0]["id"] == "AC-G1-001" and ranked[0]["gain_pct"] == 100.0  # the only criterion of model1
    model2 = [r for r in ranked if r["model"] == "model2"]
    assert model2[0]["id"] == "AC-G2-002" and model2[0]["unblocks"] == ["AC-G2-003"]
    assert abs(model2[0]["gain_pct"] - 200 / 9) < 1e-4
    assert all(r["gain_pct"] > 0 for r in ranked)


def test_baseline_diff_per_criterion_and_model(golden_dir):
    base = _data(baseline=True)["baseline"]
    changes = {c["id"]: (c["before"], c["after"]) for c in base["criteria"]}
    assert changes["AC-G2-001"] == (FAIL, PASS)
    assert changes["AC-G2-004"] == (PASS, ERROR)
    assert changes["AC-G2-005"] == (NOT_RUN, SKIPPED)
    model2 = next(m for m in base["models"] if m["key"] == "model2")
    assert (model2["before"], model2["after"]) == ("11.1%", "22.2%") and model2["delta_text"] == "+11.1 pts"


def test_json_format_is_the_same_data(golden_dir):
    data = _data(baseline=True)
    parsed = json.loads(render(data, "json"))
    assert parsed["models"][1]["ship_pct"] == pytest.approx(200 / 9)  # current results only
    assert [c["status"] for c in parsed["criteria"]] == [c["status"] for c in data["criteria"]]
    assert parsed["profile"] == "default" and parsed["run"]["commit"] == "c0ffee1234567890"


def test_unknown_format_and_missing_template_are_errors(golden_dir, tmp_path):
    with pytest.raises(ShiptwoError, match="unknown report format"):
        render(_data(), "html")
    with pytest.raises(ShiptwoError, match="template not found"):
        render(_data(), "md", tmp_path / "nope.j2")


def test_cli_report_writes_file_and_accepts_a_template(golden_dir, tmp_path, capsys):
    out = tmp_path / "out" / "ship.md"
    template = tmp_path / "mini.j2"
    template.write_text("{% for m in models %}{{ m.key }}={{ m.ship_pct_text }};{% endfor %}\n")
    args = ["report", "--spec", "spec.yaml", "--results", "results.json", "--acceptance", str(tmp_path)]
    assert main(args + ["-o", str(out)]) == 0
    assert out.read_text().startswith("# Ship report")
    assert main(args + ["-o", "-", "--template", str(template)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("model1=not run;model2=0.0%;")  # the golden run is not this checkout: nothing current


def test_cli_report_malformed_results_is_one_line_exit_2(golden_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"run": {}, "criteria": {}}')
    assert main(["report", "--spec", "spec.yaml", "--results", str(bad), "-o", "-"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "missing 'commit'" in err[0]


EVIL = "x <!-- hide\n## RELEASE\n| PASS | 100 % |\n</details>\n```\n![x](http://e/x.png) <img src=http://e/p.png>"


def _render_with(golden_dir, tmp_path, payload: str) -> str:
    """The golden results with `payload` in every field that carries untrusted text, rendered."""
    doc = json.loads((golden_dir / "results.json").read_text())
    entries = doc["criteria"]
    entries["AC-G2-002"]["message"] = "AC-G2-002 failed: " + payload
    entries["AC-G2-004"]["message"] = "raised before criterion.check: " + payload
    entries["AC-G2-005"]["reason"] = payload
    entries["AC-G2-002"]["profile"] = payload  # reaches the stale line
    entries["AC-G2-001"]["evidence"]["summary"] = payload
    entries["AC-G2-001"]["evidence"]["name " + payload] = {"path": "a`b <!--\n## RELEASE", "sha256": "cd" * 32}
    doc["run"]["time"] = "\n\n<!--" if payload == EVIL else "now"
    doc["run"]["environment"] = {"gpu": {"name": payload}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    return render(build_report(load_spec("spec.yaml"), load_results(path), BOUND), "md")


def test_untrusted_text_renders_as_literal_text(golden_dir, tmp_path):
    """Model output and model-file strings reach messages, skip reasons, summaries, evidence names and
    run fields: none may open a comment, close a fold, start a heading, row or fence, or load an image."""
    clean, text = _render_with(golden_dir, tmp_path, "benign"), _render_with(golden_dir, tmp_path, EVIL)
    assert len(text.splitlines()) == len(clean.splitlines())  # no field added a line: no heading, row or fence
    assert text.count("<details>") == clean.count("<details>") and text.count("</details>") == clean.count("</details>")
    assert text.count("```") == clean.count("```")  # only the charts' own fences
    assert "<img" not in text and "![x](" not in text and "\n## RELEASE" not in text
    assert "!\\[x\\](http:&#8203;//e/x.png)" in text  # escaped brackets: shown as text, never fetched as an image
    assert text.count("<!--") == 1 and "| ``a`b <!-- ## RELEASE`` |" in text  # inert inside its code span
    assert "**AC-G2-002** FAIL: AC-G2-002 failed: x &lt;!-- hide ## RELEASE \\| PASS \\| 100 % \\|" in text
    assert "**AC-G2-004** ERROR: raised before criterion.check: x &lt;!--" in text  # the real failures still show


def test_chart_labels_cannot_end_the_mermaid_block():
    """A results file's n reaches a pass-rate label: a quote, backtick or line break there stays inside it."""
    from shiptwo.harness import charts
    chart = charts.pass_rate_chart([{"id": "AC-1", "value": 50, "lo": 40, "hi": 60, "n": '5)"]\n```\n<!--'}])
    assert chart.count("```") == 2 and "\n<!--" not in chart and '["AC-1 (n=5)\'] \'\'\' &lt;!--)"]' in chart


GITHUB_ACTIONS = ("ping @octocat and @org/team, see #12 and owner/repo#34 and GH-56, mail a@b.io, "
                  "*bold* _it_ ~~gone~~ ~x~, https://e.example/p www.e.example keep train_log")


def test_untrusted_text_neither_pings_links_nor_emphasises(golden_dir, tmp_path):
    """Pasted into a pull request, a model's `@name` would ping a person, `#12` link an issue, a bare URL
    go live and `*x*` render bold: each is broken where GitHub looks (see shiptwo.harness.markdown_text)."""
    text = _render_with(golden_dir, tmp_path, GITHUB_ACTIONS)
    for line in (ln.replace("&#8203;", "\u200b") for ln in text.splitlines() if "ping" in ln):  # as GitHub reads it
        assert not re.search(r"@[A-Za-z0-9]|#\d|(?i:gh)-\d|://|(?i:www)\.", line), line
        bare = re.sub(r"\\[*_~]|(?<=[^\W_])_+(?=[^\W_])", "", re.sub(r"\*\*AC-[\w-]+\*\*", "", line))  # escaped, intraword, ids
        assert not re.search(r"[*_~]", bare), line
    message = next(ln for ln in text.splitlines() if ln.startswith("- **AC-G2-002** FAIL"))
    assert ("ping @&#8203;octocat and @&#8203;org/team, see #&#8203;12 and owner/repo#&#8203;34 and GH&#8203;-56, "
            "mail a@&#8203;b.io, \\*bold\\* \\_it\\_ \\~\\~gone\\~\\~ \\~x\\~, https:&#8203;//e.example/p "
            "www&#8203;.e.example keep train_log") in message  # reads the same once rendered


BIDI = "FAIL \u202eSSAP\u202c \u2067hidden\u2069 \u200f"


def test_untrusted_text_cannot_reorder_what_the_report_shows(golden_dir, tmp_path):
    """A right-to-left override in a message, reason, summary, path or run field displays `SSAP` as
    PASS (and an isolate moves text past the rest of its cell): every one reaches the report as its
    code point, the characters in the order they are written."""
    text = _render_with(golden_dir, tmp_path, BIDI)
    assert not set(text) & {chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
    assert "**AC-G2-002** FAIL: AC-G2-002 failed: FAIL (U+202E)SSAP(U+202C) (U+2067)hidden(U+2069) (U+200F)" in text


@pytest.mark.parametrize("forge", ["outcome", "legs"])
def test_a_pass_its_own_figures_contradict_shows_as_fail_not_pass(golden_dir, tmp_path, forge):
    """The report is what a pull request shows. A FAIL whose outcome alone was edited to PASS (0.04 D/N
    against >= 20), or a PASS whose leg record says the threshold was missed, read as PASS and raised
    MODEL-2's ship-% from 22.2 % to 33.3 % (and unblocked its dependant). The report re-judges a PASS
    on its recorded figures against the spec, as the gate does, and shows the contradiction."""
    doc = json.loads((golden_dir / "results.json").read_text())
    entry = doc["criteria"]["AC-G2-002"]
    if forge == "outcome":
        entry["outcome"] = "PASS"
    else:
        entry.update(outcome="PASS", measured=25.0, legs=[{"metric": "tokens", "measured": 12.0, "interval": None}])
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    data = build_report(load_spec("spec.yaml"), load_results(path), BOUND)
    rows = {r["id"]: r for r in data["criteria"]}
    assert rows["AC-G2-002"]["status"] == FAIL, rows["AC-G2-002"]
    assert "recorded PASS, but" in rows["AC-G2-002"]["message"]
    assert rows["AC-G2-003"]["status"] == BLOCKED  # its prerequisite did not pass
    model2 = next(m for m in data["models"] if m["key"] == "model2")
    assert model2["ship_pct_text"] == "22.2%"
    text = render(data, "md")
    assert "- **AC-G2-002** FAIL: recorded PASS, but" in text


def test_a_pass_of_a_criterion_without_a_bound_test_shows_no_test(golden_dir):
    """AC-G2-001's test no longer names it (its mark respelled): its recorded PASS is nothing any test ran."""
    data = build_report(load_spec("spec.yaml"), load_results("results.json"), BOUND - {"AC-G2-001"})
    row = next(r for r in data["criteria"] if r["id"] == "AC-G2-001")
    assert row["status"] == NO_TEST and row["message"] == "recorded PASS, but no test in acceptance/ is bound to it"
    assert next(m for m in data["models"] if m["key"] == "model2")["ship_pct_text"] == "0.0%"


def test_an_entry_recorded_for_another_criterion_does_not_read_as_its_pass(golden_dir, tmp_path):
    """AC-G2-001's PASS entry copied into AC-G2-006's place (no result of its own) read as AC-G2-006's PASS."""
    doc = json.loads((golden_dir / "results.json").read_text())
    doc["criteria"]["AC-G2-006"] = doc["criteria"]["AC-G2-001"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    row = next(r for r in build_report(load_spec("spec.yaml"), load_results(path), BOUND)["criteria"] if r["id"] == "AC-G2-006")
    assert row["status"] == FAIL and row["message"] == "recorded PASS, but for AC-G2-001"
