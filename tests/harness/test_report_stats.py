"""The report as a pull-request comment: every figure with its interval and n, the tested change against a
baseline, Mermaid charts instead of image links, folded details, GitHub's size limit, effort ranking."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from shiptwo import stats
from shiptwo.fileio import sha256_bytes
from shiptwo.harness.report import GITHUB_COMMENT_LIMIT, build_report, render, uncertainty
from shiptwo.harness.results import Results, format_number
from shiptwo.harness.spec import load_spec

SPEC = """\
models:
  model2: {name: MODEL-2, required: all}
criteria:
  - {id: AC-R2-001, model: model2, title: pass rate, metric: pass_at_1, comparison: ">=", threshold: 25, unit: "%",
     class: optimization, samples: {statistic: pass_pct}, effort: 10, change: {max_regression: 2, blocking: true}}
  - {id: AC-R2-002, model: model2, title: validity, metric: valid, comparison: ">=", threshold: 90, unit: "%",
     class: data, effort: 0.5}
  - {id: AC-R2-003, model: model2, title: decode, metric: tps, comparison: ">=", threshold: 10, unit: tok/s,
     class: infrastructure}
  - {id: AC-R2-004, model: model2, title: loss, metric: ce, comparison: "<=", threshold: 3, unit: nats,
     class: optimization, effort: 2}
"""
ENV = {"cpu_model": "Xeon", "torch_threads": 2, "versions": {"torch": "2.13.0"}}


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    return load_spec(tmp_path / "spec.yaml")


def _samples(path, passes: int, n: int) -> dict:
    path.write_text("".join(json.dumps({"id": f"H/{i}", "prompt_sha256": sha256_bytes(f"p{i}".encode()), "output": "",
                                        "outcome": "pass" if i < passes else "fail"}) + "\n" for i in range(n)))
    return {"kind": "file", "path": str(path), "sha256": sha256_bytes(path.read_bytes()), "n": n}


def _train_log(path, steps: int = 300) -> dict:
    lines = []
    for s in range(1, steps + 1):
        lines.append({"type": "train", "step": s, "loss": 8.0 * 0.99 ** s + 1.0, "lr": 1e-3, "tokens": s * 100})
        if s % 20 == 0:
            lines.append({"type": "val", "step": s, "val_loss": 8.2 * 0.99 ** s + 1.1, "best": True})
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return {"kind": "file", "path": str(path), "sha256": sha256_bytes(path.read_bytes())}


def _entry(outcome, measured, **extra):
    return {"outcome": outcome, "profile": "default", "commit": "c", "time": "t", "measured": measured, **extra}


def _results(tmp_path, passes=49, name="cur", env=ENV, timings=(20.0, 21.0, 19.5, 20.5, 20.2)) -> Results:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    criteria = {
        "AC-R2-001": _entry("PASS", 100 * passes / 164, samples=_samples(d / "he.jsonl", passes, 164)),
        "AC-R2-002": _entry("FAIL", 85.0, interval=[79.0, 90.0], n=164),
        "AC-R2-003": _entry("PASS", sorted(timings)[2], evidence={"repeats": list(timings), "summary": "median of 5 runs | 2 threads"}),
        "AC-R2-004": _entry("PASS", 2.5, evidence={"train_log": _train_log(d / "train_log.jsonl")}),
    }
    return Results({"commit": "c", "spec_sha256": "s", "profile": "default", "time": "t", "environment": env},
                   criteria, str(d / "results.json"))


def _row(text: str, cid: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {cid} |"))


def test_every_figure_carries_its_interval_and_n(tmp_path, spec):
    data = build_report(spec, _results(tmp_path))
    rows = {r["id"]: r for r in data["criteria"]}
    lo, hi = stats.wilson_interval(49, 164)
    assert rows["AC-R2-001"]["interval"] == pytest.approx([100 * lo, 100 * hi]) and rows["AC-R2-001"]["n"] == 164
    assert rows["AC-R2-001"]["interval_source"] == "samples"
    assert rows["AC-R2-002"]["interval"] == [79.0, 90.0] and rows["AC-R2-002"]["interval_source"] == "recorded"
    assert rows["AC-R2-003"]["n"] == 5 and rows["AC-R2-003"]["interval_source"] == "repeats"
    assert rows["AC-R2-003"]["interval"][0] <= 20.2 <= rows["AC-R2-003"]["interval"][1]
    text = render(data)
    assert f"| [{format_number(round(100 * lo, 4))}, {format_number(round(100 * hi, 4))}] (samples) | 164 |" in _row(text, "AC-R2-001")
    assert "| [79, 90] | 164 |" in _row(text, "AC-R2-002")
    assert "| — | — |" in _row(text, "AC-R2-004")  # a single loss figure: no interval claimed
    assert "- **AC-R2-003** (PASS): median of 5 runs \\| 2 threads" in text  # the evidence's own account, table-safe
    assert "- **AC-R2-001**" not in text  # no summary recorded: no line


def test_uncertainty_without_anything_to_derive_it_from_is_none(spec):
    assert uncertainty(spec.criteria["AC-R2-004"], {"measured": 2.5}) == {"interval": None, "n": None, "source": ""}


COUNTS = """\
models:
  model2: {name: MODEL-2, required: all}
criteria:
  - {id: AC-C2-001, model: model2, title: counted, metric: defects, comparison: "==", threshold: 0, unit: defects,
     class: packaging, legs: [{metric: leaks, comparison: "==", threshold: 0, unit: leaks}]}
  - {id: AC-C2-002, model: model2, title: not counted, metric: defects, comparison: "==", threshold: 0, unit: defects,
     class: packaging}
  - {id: AC-C2-003, model: model2, title: worst, metric: diff, comparison: "<=", threshold: 1, unit: logits,
     class: infrastructure}
"""


def test_a_count_over_every_item_reads_exhaustive_with_its_n(tmp_path):
    """A `==` count recorded with n and no interval is a full count: "exhaustive" and n, not "—"; without
    n it stays "—" (nothing says what was counted), and a figure that is no count keeps "—" beside its n."""
    (tmp_path / "spec.yaml").write_text(COUNTS)
    spec = load_spec(tmp_path / "spec.yaml")
    legs = [{"metric": "defects", "measured": 0, "n": 12, "interval": None, "comparison": "==", "met": True},
            {"metric": "leaks", "measured": 0, "n": 7, "interval": None, "comparison": "==", "met": True}]
    results = Results({"commit": "c", "spec_sha256": "s", "profile": "default", "time": "t"}, {
        "AC-C2-001": _entry("PASS", 0, n=12, legs=legs), "AC-C2-002": _entry("PASS", 0),
        "AC-C2-003": _entry("PASS", 0.5, n=4)}, str(tmp_path / "results.json"))
    assert uncertainty(spec.criteria["AC-C2-001"], {"measured": 0, "n": 12}) == {"interval": None, "n": 12, "source": "exhaustive"}
    text = render(build_report(spec, results))
    assert "| 0; leaks 0 (n=7, exhaustive) | exhaustive | 12 |" in _row(text, "AC-C2-001")
    assert "| 0 | — | — |" in _row(text, "AC-C2-002")
    assert "| 0.5 | — | 4 |" in _row(text, "AC-C2-003")


def test_baseline_change_with_p_value_and_not_comparable(tmp_path, spec):
    old = _results(tmp_path, passes=80, name="old", env={**ENV, "cpu_model": "EPYC"})
    data = build_report(spec, _results(tmp_path), baseline=old)
    changes = {c["id"]: c for c in data["baseline"]["criteria"]}
    he = changes["AC-R2-001"]["change"]
    assert he["verdict"] == "worse" and he["test"] == "McNemar exact" and he["p"] < 1e-6 and he["blocks"]
    assert changes["AC-R2-003"]["change"]["verdict"] == "not comparable"
    assert data["baseline"]["blocking"] == ["AC-R2-001"]
    text = render(data)
    # brackets are escaped (change texts carry results-file text): they render as plain brackets, never a link
    assert re.search(r"\| AC-R2-001 \| PASS → PASS \| 48.7805 → 29.878 \| \*\*worse; -18.9 pass-rate points \\\[.*\\\]; "
                     r"p=\S+ \(Holm \S+\), McNemar exact, n=164; regression 18.9024 > allowed 2 \\\[blocking\\\]\*\* \|", text)
    assert "| AC-R2-003 | PASS → PASS | 20.2 → 20.2 | not comparable (environment differs: cpu_model: EPYC vs Xeon) |" in text
    assert "**Significant regression beyond a blocking change rule:** AC-R2-001." in text


def test_noise_against_the_baseline_is_no_significant_change(tmp_path, spec):
    data = build_report(spec, _results(tmp_path, passes=47), baseline=_results(tmp_path, passes=49, name="old"))
    he = {c["id"]: c for c in data["baseline"]["criteria"]}["AC-R2-001"]["change"]
    assert he["verdict"] == "no significant change" and not he["blocks"]
    assert "No blocking change rule is violated." in render(data)


def _mermaid_blocks(text: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", text, flags=re.S)


def test_loss_curve_and_pass_rates_are_mermaid_xycharts(tmp_path, spec):
    text = render(build_report(spec, _results(tmp_path)))
    assert ".png" not in text
    blocks = _mermaid_blocks(text)
    assert len(blocks) == 2 and all(b.split("\n")[1 if b.startswith("%%") else 0] == "xychart-beta" for b in blocks)
    rates, loss = blocks
    labels = re.search(r"x-axis \[(.*)\]", rates).group(1)
    assert labels == '"AC-R2-001 (n=164)", "AC-R2-002 (n=164)"'
    lo, hi = stats.wilson_interval(49, 164)
    bars = re.findall(r"bar \[(.*)\]", rates)  # drawn over each other: upper bound, figure, lower bound
    assert bars == [f"{100 * hi:.4g}, 90", f"{100 * 49 / 164:.4g}, 85", f"{100 * lo:.4g}, 79"]
    steps = re.search(r'x-axis "optimizer step" \[(.*)\]', loss).group(1).split(", ")
    assert steps == [str(s) for s in range(20, 301, 20)]  # one category per evaluation
    train, val = (re.findall(r"line \[(.*)\]", loss)[i].split(", ") for i in (0, 1))
    assert len(train) == len(val) == len(steps)
    assert float(val[0]) == pytest.approx(8.2 * 0.99 ** 20 + 1.1, rel=1e-3)
    mean_1_20 = sum(8.0 * 0.99 ** s + 1.0 for s in range(1, 21)) / 20
    assert float(train[0]) == pytest.approx(mean_1_20, rel=1e-3)  # window mean since the previous evaluation
    assert float(train[0]) > float(train[-1])


def test_details_are_folded(tmp_path, spec):
    text = render(build_report(spec, _results(tmp_path)))
    for summary in ("Artifacts the results ran on", "Thresholds used", "Environment of the run", "<b>data</b>: 1 (AC-R2-002)"):
        assert f"<details><summary>{summary}" in text
    assert text.count("<details>") == text.count("</details>")
    assert "| cpu_model | Xeon |" in text


def test_report_stays_under_githubs_comment_limit(tmp_path):
    criteria = "".join(f"  - {{id: AC-R2-{i:03d}, model: model2, title: '{'long title ' * 8}', metric: m{i}, comparison: '==', "
                       f"threshold: 0, unit: defects, class: packaging, rationale: '{'why ' * 60}'}}\n" for i in range(1, 121))
    (tmp_path / "big.yaml").write_text("models:\n  model2: {name: MODEL-2, required: all}\ncriteria:\n" + criteria)
    spec = load_spec(tmp_path / "big.yaml")
    message = "defect " * 200
    results = Results({"commit": "c", "spec_sha256": "s", "profile": "default", "time": "t"},
                      {cid: {**_entry("FAIL", 3), "message": message, "evidence": {
                          f"file{k}": {"path": f"/x/{'deep/' * 10}{cid}-{k}", "sha256": "ab" * 32} for k in range(5)}}
                       for cid in spec.criteria})
    data = build_report(spec, results)
    text = render(data)
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert "Left out to stay under GitHub's 65536-character comment limit" in text
    assert all(len(line) < 2000 for line in text.splitlines())  # long messages are clipped in cells
    small = render(build_report(spec, Results(results.run, {})))
    assert "Left out" not in small and len(small) < GITHUB_COMMENT_LIMIT


def test_opportunities_rank_gain_per_unit_of_effort(tmp_path, spec):
    results = _results(tmp_path)
    results.criteria["AC-R2-001"]["outcome"] = "FAIL"
    results.criteria["AC-R2-004"]["outcome"] = "FAIL"
    results.criteria["AC-R2-003"]["outcome"] = "FAIL"
    ranked = build_report(spec, results)["opportunities"]
    # each gains 25 points; effort 0.5 (AC-R2-002), none given (AC-R2-003, ranked as 1 day), 2, 10
    assert [(r["id"], r["effort_text"], r["per_day_text"]) for r in ranked] == [
        ("AC-R2-002", "0.5", "50.0"), ("AC-R2-003", "1?", "25.0"), ("AC-R2-004", "2", "12.5"), ("AC-R2-001", "10", "2.5")]
    assert "| 1 | AC-R2-002 | model2 | FAIL | +25.0 pts | 0.5 | 50.0 |" in render(build_report(spec, results))


# --- the picture: the report's Mermaid rendered the way GitHub's browser would ---------------------

REPO = Path(__file__).resolve().parents[2]
MERMAID_JS = [Path(p) for p in (os.environ.get("SHIPTWO_MERMAID_JS", ""),) if p] + [
    REPO / ".cache" / "mermaid" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js",
    Path("/tmp/mermaid/node_modules/mermaid/dist/mermaid.min.js")]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
MERMAID = next((p for p in MERMAID_JS if p.is_file()), None)
INSTALL = ("needs headless Chromium and mermaid: `apt-get install chromium` (Debian) and "
           "`npm install --prefix .cache/mermaid mermaid` (or set $SHIPTWO_MERMAID_JS to mermaid.min.js)")


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--virtual-time-budget=15000", *args, url], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None or MERMAID is None, reason=INSTALL)
def test_report_mermaid_renders_to_a_picture_in_headless_chromium(tmp_path, spec):
    from PIL import Image

    blocks = _mermaid_blocks(render(build_report(spec, _results(tmp_path))))
    page = tmp_path / "report.html"
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><script src="{MERMAID.as_uri()}"></script></head>'
        '<body style="background:#fff;margin:0">'
        + "".join(f'<pre class="mermaid">{html.escape(b)}</pre>' for b in blocks)
        + '<script>mermaid.initialize({startOnLoad: false});'
          'mermaid.run({querySelector: ".mermaid"}).then(() => document.body.dataset.done = "1",'
          ' e => document.body.dataset.error = String(e));</script></body></html>')
    dom = _chromium(page.as_uri(), "--dump-dom").stdout
    assert 'data-done="1"' in dom, dom[-2000:]
    svgs = re.findall(r"<svg[^>]*aria-roledescription=\"xychart\".*?</svg>", dom, flags=re.S)
    assert len(svgs) == len(blocks) == 2 and "Syntax error" not in dom
    assert all('class="plot"' in s for s in svgs)
    assert svgs[0].count('class="bar-plot-') == 3 and svgs[1].count('class="line-plot-') == 2
    shot = tmp_path / "report.png"
    _chromium(page.as_uri(), "--window-size=800,1100", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    pixels = image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata()
    colours = Counter(pixels)
    drawn = sum(n for c, n in colours.items() if c != (255, 255, 255))
    assert drawn > 0.03 * image.width * image.height  # charts, not a blank page
    assert colours[(0x21, 0x71, 0xB5)] > 200  # the dark band of the measured pass rate (and the train line)
    assert sum(n for (r, g, b), n in colours.items() if r > 200 and 60 < g < 140 and b < 60) > 50  # the orange validation line


def test_a_count_split_over_several_tests_is_over_all_their_items():
    """AC-SHIP2-012 has two tests (provenance fields, release files): passing, the entry's n is their
    total, each test's n kept per test; a failing one keeps its own figure and n."""
    from shiptwo.harness.results import combine_records

    def rec(node, outcome, measured, n):
        return {"id": "AC-C2-001", "nodeid": node, "expected": ["t::a", "t::b"], "outcome": outcome, "measured": measured,
                "n": n, "interval": None, "legs": [], "duration_s": 0.1, "evidence": {}}

    entry = combine_records([rec("t::a", "PASS", 0, 12), rec("t::b", "PASS", 0, 9)])
    assert entry["n"] == 21 and [r["n"] for r in entry["per_test"]] == [12, 9]
    failed = combine_records([rec("t::a", "PASS", 0, 12), rec("t::b", "FAIL", 2, 9)])
    assert (failed["measured"], failed["n"]) == (2, 9)
    assert combine_records([rec("t::a", "PASS", 0, 12), rec("t::b", "PASS", 0, None)])["n"] == 12  # no total claimed
