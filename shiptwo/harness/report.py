"""The ship report: a scorecard turned into plain data, rendered by a Jinja template or as JSON.

`build_report` gathers everything the report shows (run identity, ship-% per model, every
criterion with its figure, 95% interval and n, failures by root-cause class, blocked criteria, the
fixes that would move ship-% most per unit of effort, and the tested change against a baseline);
templates only lay it out. The markdown is made to be pasted into a pull request: Mermaid charts
instead of image links, details folded, and never over GitHub's comment limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from shiptwo import stats
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_text
from shiptwo.harness import charts, markdown_text
from shiptwo.harness.baseline_terms import as_recorded, changed_terms, recorded_terms, terms_text, under_today
from shiptwo.harness.compare import compare, repeats, samples_path
from shiptwo.harness.evidence import is_file_record, read_samples, sample_value
from shiptwo.harness.rederive import outcome_disagreements
from shiptwo.harness.results import Results, format_number
from shiptwo.harness.scoring import (
    CriterionStatus, Scorecard, opportunities, own_outcomes, resolve_statuses, score_models,
)
from shiptwo.harness.spec import Criterion, Spec, scan_bindings

from shiptwo.harness.results import BLOCKED, ERROR, FAIL, NO_TEST, PASS, STATUSES
from shiptwo.harness.spec import ROOT_CAUSE_CLASSES
from shiptwo.paths import ACCEPTANCE_DIR, DEFAULT_PROFILE

REPORT_TEMPLATE = "report.md.j2"
REPORT_FORMATS = ("md", "json")
GITHUB_COMMENT_LIMIT = 65536  # characters GitHub accepts in one comment
MAX_CELL = 300  # characters of a message shown in a table cell or list item
SUMMARY_KEY = "summary"  # evidence key: a criterion's one-line account of what it measured (shown in the report)
EVIDENCE_TRAIN_LOG = "train_log"  # evidence key of a trainer's step log: drawn as the loss curve
EXHAUSTIVE = "exhaustive"  # interval column of a count over every item (n): nothing was sampled
DEFAULT_EFFORT = 1.0  # person-days assumed for ranking a criterion whose spec gives no `effort`

_TEMPLATE_DIR = Path(__file__).parent / "templates"


def bound_ids(acceptance_dir: str | Path = ACCEPTANCE_DIR) -> set[str] | None:
    """Ids with a bound acceptance test (None when there is no acceptance directory to scan)."""
    if not Path(acceptance_dir).is_dir():
        return None
    return {b.cid for b in scan_bindings(acceptance_dir)}


def _pct_text(pct: float | None) -> str:
    return "not run" if pct is None else f"{pct:.1f}%"


def _threshold_text(criterion: Criterion) -> str:
    if isinstance(criterion.threshold, dict):
        return ", ".join(f"{p}: {format_number(v)}" for p, v in criterion.threshold.items())
    return format_number(criterion.threshold)


def _clip(text: str, limit: int = MAX_CELL) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _measured_text(entry: dict | None) -> str:
    measured = (entry or {}).get("measured")
    return "—" if measured is None else format_number(measured)


# --- uncertainty ------------------------------------------------------------------------------


def uncertainty(criterion: Criterion, entry: dict | None) -> dict:
    """The primary figure's 95% interval and n: as recorded, else derived from the entry's
    per-sample file (Wilson for pass/fail, bootstrap of the mean for values) or its repeated
    measurements (bootstrap of the median); `source` says which. A count judged with `==` over n
    items and no interval is `exhaustive`: every item was checked, so there is no sampling interval."""
    entry = entry or {}
    interval, n = entry.get("interval"), entry.get("n")
    if interval:
        return {"interval": list(interval), "n": n, "source": "recorded"}
    rule = getattr(criterion, "samples", None)
    path = samples_path(entry)
    if path and rule is not None and rule.statistic != "sum" and Path(path).is_file():
        try:
            samples = read_samples(path)
        except ShiptwoError:
            samples = []
        values = [sample_value(s) for s in samples]
        if values and all("outcome" in s for s in samples):
            lo, hi = stats.wilson_interval(int(sum(values)), len(values))
            scale = 100.0 if rule.statistic == "pass_pct" else 1.0
            return {"interval": [scale * lo, scale * hi], "n": len(values), "source": "samples"}
        if len(values) >= 2 and rule.statistic == "mean":
            return {"interval": list(stats.bootstrap_ci(values)), "n": len(values), "source": "samples"}
    runs = repeats(entry)
    if runs:
        return {"interval": list(stats.bootstrap_ci(runs, stat="median")), "n": len(runs), "source": "repeats"}
    return {"interval": None, "n": n, "source": EXHAUSTIVE if _is_exhaustive(criterion.comparison, n) else ""}


def _is_exhaustive(comparison: str | None, n) -> bool:
    """A count or flag (`==`) recorded over n items without an interval: a full count, not a missing interval."""
    return comparison == "==" and n is not None


def _interval_text(u: dict) -> str:
    if not u["interval"]:
        return EXHAUSTIVE if u["source"] == EXHAUSTIVE else "—"
    lo, hi = u["interval"]
    return f"[{format_number(round(lo, 4))}, {format_number(round(hi, 4))}]"


# --- re-judged passes -------------------------------------------------------------------------


def _contradiction(criterion: Criterion, entry: dict, profile: str) -> str:
    """Why a recorded PASS does not follow from its own recorded figures under the spec, else "": the
    gate's outcome re-derivation (each leg against the current spec's threshold for the entry's profile).
    A record from before leg records is judged on its top-level figure."""
    if not entry.get("legs"):
        entry = {**entry, "legs": [{"metric": criterion.metric, "measured": entry.get("measured"),
                                    "interval": entry.get("interval")}]}
    try:
        problems = outcome_disagreements(criterion, entry, entry.get("profile", profile))
    except ShiptwoError as exc:  # a profile the spec has no threshold for
        problems = [str(exc)]
    return "; ".join(problems)


def _terms_of(spec: Spec, cid: str, entry: dict) -> Criterion:
    """The criterion on the terms `entry` was judged under: today's, unless it records another spec and its thresholds."""
    criterion, terms = spec.criteria[cid], recorded_terms(spec.criteria[cid], entry)
    if entry.get("spec_sha256") in (None, spec.sha256) or terms is None:
        return criterion
    return as_recorded(criterion, terms)


def scorecard(spec: Spec, results: Results | None, bound: set[str] | None = None, checkout: dict | None = None,
              own_terms: bool = False) -> Scorecard:
    """The report's scorecard: `score`, except that a PASS its own figures contradict (an outcome edited
    to PASS, a leg record that misses its threshold) shows as FAIL with why, and counts as one; a PASS of a
    criterion no test is bound to (`bound`, the ids the acceptance scan found) shows as NO TEST, and an
    entry recorded for another id as FAIL. The report
    is what a pull request shows; the gate refuses such a PASS too, with the rest of its re-derivation.
    With `own_terms` (a baseline) the results are judged on the spec their run recorded: an entry of that
    spec is not stale, and one judged against another spec than today's is re-derived on the thresholds it
    recorded, not on today's."""
    run = results.run if results else {}
    profile = run.get("profile", DEFAULT_PROFILE)
    own = own_outcomes(spec, results, bound, checkout=checkout, spec_sha256=run.get("spec_sha256") if own_terms else None)
    for cid, (outcome, entry, stale) in own.items():
        if outcome != PASS or entry is None:
            continue
        if bound is not None and cid not in bound:  # nothing could have run for it
            own[cid] = (NO_TEST, {**entry, "outcome": NO_TEST, "message": "recorded PASS, but no test in acceptance/ "
                                  "is bound to it"}, stale)
        elif entry.get("id", cid) != cid:  # another criterion's entry, copied into this one's place
            own[cid] = (FAIL, {**entry, "outcome": FAIL, "message": f"recorded PASS, but for {entry['id']}"}, stale)
        elif why := _contradiction(_terms_of(spec, cid, entry) if own_terms else spec.criteria[cid], entry, profile):
            own[cid] = (FAIL, {**entry, "outcome": FAIL, "message": f"recorded PASS, but {why}"}, stale)
    statuses = resolve_statuses(spec, own)
    return Scorecard(spec, statuses, score_models(spec, statuses))


# --- rows -------------------------------------------------------------------------------------


def _legs_text(entry: dict) -> str:
    """The extra legs' figures: `metric value [lo, hi] (n=..)`, `(n=.., exhaustive)` for a count over every item."""
    parts = []
    for leg in (entry.get("legs") or [])[1:]:
        text = f"{leg.get('metric')} {format_number(leg.get('measured'))}"
        if leg.get("interval"):
            text += f" [{format_number(leg['interval'][0])}, {format_number(leg['interval'][1])}]"
        if leg.get("n") is not None:
            exhaustive = not leg.get("interval") and _is_exhaustive(leg.get("comparison"), leg["n"])
            text += f" (n={leg['n']}{', ' + EXHAUSTIVE if exhaustive else ''})"
        parts.append(text + ("" if leg.get("met", True) else " — not met"))
    return "; ".join(parts)


def _criterion_row(st: CriterionStatus, profile: str) -> dict:
    c, entry = st.criterion, st.entry or {}
    threshold = entry.get("threshold", c.threshold_for(profile))
    u = uncertainty(c, st.entry)
    return {
        "id": c.id,
        "model": c.model,
        "title": c.title,
        "status": st.status,
        "own": st.own,
        "measured": entry.get("measured"),
        "measured_text": _measured_text(entry),
        "interval": u["interval"],
        "interval_text": _interval_text(u),
        "interval_source": u["source"],
        "n": u["n"],
        "n_text": "—" if u["n"] is None else str(u["n"]),
        "legs_text": _legs_text(entry),
        "threshold": threshold,
        "threshold_text": f"{c.comparison} {format_number(threshold)}",
        "judged_on": getattr(c, "judged_on", "point"),
        "comparison": c.comparison,
        "unit": c.unit,
        "class": c.root_cause,
        "weight": c.weight,
        "effort": getattr(c, "effort", None),
        "blocked_by": list(st.blocked_by),
        "root_blockers": list(st.root_blockers),
        "stale": _clip(st.stale),
        "message": _clip(entry.get("message", "")),
        "reason": _clip(entry.get("reason", "")),
        "profile": entry.get("profile", ""),
        "commit": entry.get("commit", ""),
        "nodeids": entry.get("nodeids", []),
        "evidence": entry.get("evidence", {}),
        "summary": _clip(str((entry.get("evidence") or {}).get(SUMMARY_KEY) or ""), 4 * MAX_CELL),
        "all_thresholds": _threshold_text(c),
        "rationale": _clip(c.rationale),
    }


def _model_rows(card: Scorecard) -> list[dict]:
    return [
        {
            "key": key,
            "name": ms.model.name,
            "ship_pct": ms.ship_pct,
            "ship_pct_text": _pct_text(ms.ship_pct),
            "passed_weight": ms.passed_weight,
            "total_weight": ms.total_weight,
            "stale_passed_weight": getattr(ms, "stale_passed_weight", 0.0),
            "min_ship_pct": ms.model.min_ship_pct,
            "required": list(ms.model.required),
            "counts": ms.counts,
        }
        for key, ms in card.models.items()
    ]


def _opportunities(card: Scorecard) -> list[dict]:
    """Open criteria ranked by ship-% gained per person-day of `effort` (the spec's estimate)."""
    ranked = []
    for o in opportunities(card):
        if o.gain_pct <= 0:
            continue
        effort = getattr(card.spec.criteria[o.cid], "effort", None)
        per_day = o.gain_pct / (effort or DEFAULT_EFFORT)
        st = card.statuses[o.cid]
        ranked.append({"id": o.cid, "model": o.model, "status": st.status + (" †" if st.stale else ""),
                       "gain_pct": round(o.gain_pct, 6), "gain_text": f"+{o.gain_pct:.1f} pts",
                       "effort": effort, "effort_text": format_number(effort) if effort else f"{format_number(DEFAULT_EFFORT)}?",
                       "per_day": round(per_day, 6), "per_day_text": f"{per_day:.1f}",
                       "unblocks": list(o.unblocks), "still_blocked_by": list(o.still_blocked_by)})
    return sorted(ranked, key=lambda r: (-r["per_day"], -r["gain_pct"], r["id"]))


def _baseline_section(spec: Spec, card: Scorecard, old: Scorecard, results: Results, baseline: Results) -> dict:
    """Per criterion: status and figure before (as the baseline's run judged them) and after, the tested
    change, and the thresholds where they changed between the runs; ship-% per model, the change taken
    against the baseline's figures under today's thresholds when any changed."""
    changes = {ch.cid: ch for ch in compare(spec, results, baseline)}
    rows, today = [], {}
    for cid, st in card.statuses.items():
        before, ch = old.statuses[cid], changes[cid]
        if before.entry is None and st.entry is None:
            continue
        row = {"id": cid, "before": before.status, "after": st.status,
               "measured_before": _measured_text(before.entry), "measured_after": _measured_text(st.entry),
               "change": ch.to_json(), "change_text": _clip(ch.to_json()["text"], 2 * MAX_CELL),
               "threshold_changed": False, "threshold_before": "", "threshold_after": "", "before_today": None}
        if before.entry is not None:
            profile = before.entry.get("profile") or baseline.run.get("profile", DEFAULT_PROFILE)
            if changed := changed_terms(before.criterion, before.entry, profile):
                was, now = changed
                today[cid] = under_today(before.criterion, before.entry, profile)
                row.update(threshold_changed=True, threshold_before=terms_text(was), threshold_after=terms_text(now),
                           before_today=today[cid])
        rows.append(row)
    rejudged = None
    if today:  # the baseline's own figures under today's thresholds, where they say
        own = {k: (today.get(k) if today.get(k) and s.own in (PASS, FAIL) else s.own, s.entry, s.stale)
               for k, s in old.statuses.items()}
        rejudged = score_models(spec, resolve_statuses(spec, own))
    models = []
    for key, ms in card.models.items():
        was = old.models[key].ship_pct
        was_today = rejudged[key].ship_pct if rejudged else was
        delta = None if was_today is None or ms.ship_pct is None else ms.ship_pct - was_today
        models.append({"key": key, "before": _pct_text(was), "after": _pct_text(ms.ship_pct),
                       "before_today": None if was_today == was else _pct_text(was_today),
                       "delta": None if delta is None else round(delta, 6),
                       "delta_text": "n/a" if delta is None else f"{delta:+.1f} pts"})
    return {"path": baseline.path, "run": baseline.run, "criteria": rows, "models": models,
            "spec_sha256": baseline.run.get("spec_sha256"), "spec_matches": baseline.run.get("spec_sha256") == spec.sha256,
            "threshold_changes": [r["id"] for r in rows if r["threshold_changed"]],
            "blocking": [r["id"] for r in rows if r["change"]["blocks"]]}


def _artifacts(rows: list[dict]) -> list[dict]:
    """Every hashed evidence file or directory, so the report names the artifacts it ran on."""
    return [
        {"id": r["id"], "name": name, "path": value["path"], "sha256": value["sha256"]}
        for r in rows
        for name, value in sorted(r["evidence"].items())
        if is_file_record(value)
    ]


def _loss_charts(rows: list[dict]) -> list[dict]:
    """One Mermaid loss chart per distinct train log named in the evidence."""
    seen, out = set(), []
    for r in rows:
        rec = r["evidence"].get(EVIDENCE_TRAIN_LOG)
        if not is_file_record(rec) or rec["sha256"] in seen:
            continue
        seen.add(rec["sha256"])
        try:
            chart = charts.loss_chart(*charts.read_train_log(rec["path"]), f"Training loss, {r['model']} ({r['id']})")
        except ShiptwoError as exc:
            out.append({"id": r["id"], "chart": "", "problem": str(exc)})
            continue
        out.append({"id": r["id"], "chart": chart, "problem": "" if chart else "the train log holds no step"})
    return out


def _pass_rate_rows(rows: list[dict]) -> list[dict]:
    return [{"id": r["id"], "value": r["measured"], "lo": r["interval"][0], "hi": r["interval"][1], "n": r["n"]}
            for r in rows if r["unit"] == "%" and r["interval"] and r["measured"] is not None and r["n"]]


def build_report(spec: Spec, results: Results | None, bound: set[str] | None = None,
                 baseline: Results | None = None, output_dir: str | Path | None = None,
                 checkout: dict | None = None) -> dict:
    """All data the report shows, JSON-safe (the `--format json` output is exactly this); with
    `checkout`, results from another commit than the one reported on are marked stale.
    (`output_dir` is accepted for callers of the earlier signature; charts need no relative links.)"""
    card = scorecard(spec, results, bound, checkout)
    run = results.run if results else {}
    profile = run.get("profile", DEFAULT_PROFILE)
    rows = [_criterion_row(st, profile) for st in card.statuses.values()]
    failures = {cls: [r for r in rows if r["status"] in (FAIL, ERROR) and r["class"] == cls] for cls in ROOT_CAUSE_CLASSES}
    ranked = _opportunities(card)
    open_count = sum(1 for st in card.statuses.values() if st.status != PASS or st.stale)  # a stale PASS counts nothing
    return {
        "run": run,
        "results_path": results.path if results else "",
        "profile": profile,
        "spec": {"path": spec.path, "sha256": spec.sha256, "matches_results": run.get("spec_sha256") in (None, spec.sha256)},
        "environment": run.get("environment") or {},
        "models": _model_rows(card),
        "criteria": rows,
        "failures_by_class": {cls: rows_ for cls, rows_ in failures.items() if rows_},
        "blocked": [r for r in rows if r["status"] == BLOCKED],
        "stale": [r for r in rows if r["stale"]],
        "opportunities": ranked,
        "open_without_gain": open_count - len(ranked),
        "pass_rate_chart": charts.pass_rate_chart(_pass_rate_rows(rows)),
        "loss_charts": _loss_charts(rows),
        "artifacts": _artifacts(rows),
        "baseline": _baseline_section(spec, card, scorecard(spec, baseline, bound, own_terms=True), results, baseline) if baseline and results else None,
        "statuses": list(STATUSES),
        "compact": False,
        "limit": GITHUB_COMMENT_LIMIT,
    }


def render_markdown(data: dict, template: str | Path | None = None) -> str:
    """Render report data with the packaged template or a user-supplied one; the packaged one is
    re-rendered compact (folded details left out) when the full text would exceed GitHub's limit."""
    if template is not None:
        template = Path(template)
        if not template.is_file():
            raise ShiptwoError(f"{template}: template not found")
        loader, name = jinja2.FileSystemLoader(str(template.parent)), template.name
    else:
        loader, name = jinja2.FileSystemLoader(str(_TEMPLATE_DIR)), REPORT_TEMPLATE
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(cell=markdown_text.cell, text=markdown_text.text, code=markdown_text.code)
    try:
        text = env.get_template(name).render(**data)
        if template is None and len(text) > GITHUB_COMMENT_LIMIT:
            text = env.get_template(name).render(**{**data, "compact": True})
    except jinja2.TemplateError as exc:
        raise ShiptwoError(f"{template or name}: template error: {exc}") from exc
    if template is None and len(text) > GITHUB_COMMENT_LIMIT:
        raise ShiptwoError(f"report: {len(text)} characters even compact, over GitHub's {GITHUB_COMMENT_LIMIT}; "
                           "use --format json")
    return text


def render(data: dict, fmt: str = "md", template: str | Path | None = None) -> str:
    """The report text in `fmt` (md or json)."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if fmt != "md":
        raise ShiptwoError(f"unknown report format {fmt!r} (expected one of {', '.join(REPORT_FORMATS)})")
    return render_markdown(data, template)


def write_report(text: str, output: str | Path) -> Path:
    return atomic_write_text(output, text)
