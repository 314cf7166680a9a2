"""The ship report: a scorecard turned into plain data, rendered by a Jinja template or as JSON.

`build_report` gathers everything the report shows (run identity, ship-% per model, every
criterion with its status and threshold, failures by root-cause class, blocked criteria, the
fixes that would move ship-% most, and the change against a baseline); templates only lay it out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jinja2

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_text
from shiptwo.harness.results import Results, format_number
from shiptwo.harness.scoring import CriterionStatus, Scorecard, opportunities, score
from shiptwo.harness.spec import Criterion, Spec, scan_bindings

from shiptwo.harness.results import BLOCKED, ERROR, EVIDENCE_LOSS_CURVE, FAIL, PASS, STATUSES
from shiptwo.harness.spec import ROOT_CAUSE_CLASSES
from shiptwo.paths import ACCEPTANCE_DIR, DEFAULT_PROFILE

REPORT_TEMPLATE = "report.md.j2"
REPORT_FORMATS = ("md", "json")


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


def _evidence_link(evidence: dict, output_dir: Path | None) -> str:
    """Path of the loss-curve image relative to the report, or '' when the evidence has none."""
    entry = evidence.get(EVIDENCE_LOSS_CURVE)
    path = entry.get("path") if isinstance(entry, dict) else entry if isinstance(entry, str) else None
    if not path:
        return ""
    return os.path.relpath(path, output_dir) if output_dir else str(path)


def _measured_text(entry: dict | None) -> str:
    measured = (entry or {}).get("measured")
    return "—" if measured is None else format_number(measured)


def _criterion_row(st: CriterionStatus, profile: str, output_dir: Path | None) -> dict:
    c, entry = st.criterion, st.entry or {}
    threshold = entry.get("threshold", c.threshold_for(profile))
    measured = entry.get("measured")
    return {
        "id": c.id,
        "model": c.model,
        "title": c.title,
        "status": st.status,
        "own": st.own,
        "measured": measured,
        "measured_text": _measured_text(entry),
        "threshold": threshold,
        "threshold_text": f"{c.comparison} {format_number(threshold)}",
        "comparison": c.comparison,
        "unit": c.unit,
        "class": c.root_cause,
        "weight": c.weight,
        "blocked_by": list(st.blocked_by),
        "root_blockers": list(st.root_blockers),
        "stale": st.stale,
        "message": entry.get("message", ""),
        "reason": entry.get("reason", ""),
        "profile": entry.get("profile", ""),
        "commit": entry.get("commit", ""),
        "nodeids": entry.get("nodeids", []),
        "evidence": entry.get("evidence", {}),
        "loss_curve": _evidence_link(entry.get("evidence", {}), output_dir),
        "all_thresholds": _threshold_text(c),
        "rationale": c.rationale,
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
            "min_ship_pct": ms.model.min_ship_pct,
            "required": list(ms.model.required),
            "counts": ms.counts,
        }
        for key, ms in card.models.items()
    ]


def _baseline_section(card: Scorecard, old: Scorecard, path: str, old_run: dict) -> dict:
    """Status and measurement changes per criterion, ship-% change per model."""
    changes = []
    for cid, st in card.statuses.items():
        before = old.statuses[cid]
        old_m = (before.entry or {}).get("measured")
        new_m = (st.entry or {}).get("measured")
        if before.status != st.status or old_m != new_m:
            changes.append({"id": cid, "before": before.status, "after": st.status,
                            "measured_before": _measured_text(before.entry), "measured_after": _measured_text(st.entry)})
    models = []
    for key, ms in card.models.items():
        before = old.models[key].ship_pct
        delta = None if before is None or ms.ship_pct is None else ms.ship_pct - before
        models.append({"key": key, "before": _pct_text(before), "after": _pct_text(ms.ship_pct),
                       "delta": None if delta is None else round(delta, 6),
                       "delta_text": "n/a" if delta is None else f"{delta:+.1f} pts"})
    return {"path": path, "run": old_run, "criteria": changes, "models": models,
            "unchanged": len(card.statuses) - len(changes)}


def _artifacts(rows: list[dict]) -> list[dict]:
    """Every hashed evidence file or directory, so the report names the artifacts it ran on."""
    return [
        {"id": r["id"], "name": name, "path": value["path"], "sha256": value["sha256"]}
        for r in rows
        for name, value in sorted(r["evidence"].items())
        if isinstance(value, dict) and "sha256" in value and "path" in value
    ]


def build_report(spec: Spec, results: Results | None, bound: set[str] | None = None,
                 baseline: Results | None = None, output_dir: str | Path | None = None,
                 checkout: dict | None = None) -> dict:
    """All data the report shows, JSON-safe (the `--format json` output is exactly this); with
    `checkout`, results from another commit than the one reported on are marked stale."""
    card = score(spec, results, bound, checkout=checkout)
    run = results.run if results else {}
    profile = run.get("profile", DEFAULT_PROFILE)
    out_dir = Path(output_dir) if output_dir else None
    rows = [_criterion_row(st, profile, out_dir) for st in card.statuses.values()]
    failures = {cls: [r for r in rows if r["status"] in (FAIL, ERROR) and r["class"] == cls] for cls in ROOT_CAUSE_CLASSES}
    ranked = [
        {"id": o.cid, "model": o.model, "status": card.statuses[o.cid].status, "gain_pct": round(o.gain_pct, 6),
         "gain_text": f"+{o.gain_pct:.1f} pts", "unblocks": list(o.unblocks), "still_blocked_by": list(o.still_blocked_by)}
        for o in opportunities(card)
        if o.gain_pct > 0
    ]
    open_count = sum(1 for st in card.statuses.values() if st.status != PASS)
    return {
        "run": run,
        "results_path": results.path if results else "",
        "profile": profile,
        "spec": {"path": spec.path, "sha256": spec.sha256, "matches_results": run.get("spec_sha256") in (None, spec.sha256)},
        "models": _model_rows(card),
        "criteria": rows,
        "failures_by_class": {cls: rows_ for cls, rows_ in failures.items() if rows_},
        "blocked": [r for r in rows if r["status"] == BLOCKED],
        "stale": [r for r in rows if r["stale"]],
        "opportunities": ranked,
        "open_without_gain": open_count - len(ranked),
        "loss_curves": [r for r in rows if r["loss_curve"]],
        "artifacts": _artifacts(rows),
        "baseline": _baseline_section(card, score(spec, baseline, bound), baseline.path, baseline.run) if baseline else None,
        "statuses": list(STATUSES),
    }


def _md_cell(value) -> str:
    """Make a value safe inside a GitHub markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict, template: str | Path | None = None) -> str:
    """Render report data with the packaged template or a user-supplied one."""
    if template is not None:
        template = Path(template)
        if not template.is_file():
            raise ShiptwoError(f"{template}: template not found")
        loader, name = jinja2.FileSystemLoader(str(template.parent)), template.name
    else:
        loader, name = jinja2.FileSystemLoader(str(_TEMPLATE_DIR)), REPORT_TEMPLATE
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["cell"] = _md_cell
    try:
        return env.get_template(name).render(**data)
    except jinja2.TemplateError as exc:
        raise ShiptwoError(f"{template or name}: template error: {exc}") from exc


def render(data: dict, fmt: str = "md", template: str | Path | None = None) -> str:
    """The report text in `fmt` (md or json)."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if fmt != "md":
        raise ShiptwoError(f"unknown report format {fmt!r} (expected one of {', '.join(REPORT_FORMATS)})")
    return render_markdown(data, template)


def write_report(text: str, output: str | Path) -> Path:
    return atomic_write_text(output, text)
