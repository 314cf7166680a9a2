"""Verdict bundles: everything a release verdict rests on, in one directory that re-verifies offline.

`shiptwo gate --bundle DIR` writes the spec, the results (and the baseline they were compared
with), every evidence and per-sample file small enough to carry, the SHA-256 of every artifact the
results name, the environment, and the verdict, with a SHA-256 manifest (fileio's scheme, as the
artifact store and releases use). `shiptwo gate --from-bundle DIR` refuses a bundle whose files do
not match its manifest, then re-runs the gate on the bundle's own spec and results, with evidence
paths pointing into the bundle. The gate's options (models, allow_stale) and the bound tests come
from the command line and the checkout, never from bundle.json; in a checkout, a bundle whose spec
is not the checkout's is refused.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_output_dir, atomic_write_json, sha256_file, tree_digests, tree_problems
from shiptwo.harness.evidence import hash_directory, is_file_record
from shiptwo.harness.results import Results, load_results
from shiptwo.harness.spec import Spec, load_spec

BUNDLE_SCHEMA = 1
BUNDLE_MANIFEST = "manifest.json"
BUNDLE_INFO = "bundle.json"  # gate options, verdict, environment, artifact hashes
BUNDLE_SPEC = "spec.yaml"
RESULTS_FILE = {"current": "results.json", "baseline": "baseline.json"}
MAX_COPY_BYTES = 64 << 20  # evidence up to this size travels in the bundle; larger is referenced by SHA-256
SAMPLES_KEY = "samples"


@dataclass
class Bundle:
    """An opened, verified bundle: its spec and results with evidence paths pointing into it."""

    root: Path
    spec: Spec
    results: Results
    baseline: Results | None
    info: dict
    notes: list[str]


def _records(entry: dict):
    """(name, record) of every file or directory an entry names: its evidence and its samples file."""
    for name, value in sorted((entry.get("evidence") or {}).items()):
        if is_file_record(value):
            yield name, value
    if is_file_record(entry.get(SAMPLES_KEY)):
        yield SAMPLES_KEY, entry[SAMPLES_KEY]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _digest(path: Path) -> str:
    return hash_directory(path)[0] if path.is_dir() else sha256_file(path)


def _carry(results: Results, which: str, tmp: Path, max_bytes: int) -> list[dict]:
    """Copy each evidence file that still matches its recorded SHA-256 and fits; list them all."""
    artifacts, copied = [], {}  # copied: SHA-256 -> where the first copy went (one copy per content)
    for cid, entry in sorted(results.criteria.items()):
        for name, rec in _records(entry):
            src = Path(rec["path"])
            item = {"results": which, "id": cid, "name": name, "path": rec["path"], "sha256": rec["sha256"], "bundled": None}
            if rec["sha256"] is None or not src.exists():
                item["note"] = "missing when bundled"
            elif _size(src) > max_bytes:
                item["note"] = f"referenced by SHA-256 only (over {max_bytes >> 20} MiB)"
            elif rec["sha256"] in copied:
                item["bundled"] = copied[rec["sha256"]]
            elif _digest(src) != rec["sha256"]:
                item["note"] = "differs from its recorded SHA-256: not bundled"
            else:
                rel = f"evidence/{which}/{cid}/{name}/{src.name}"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / rel)
                item["bundled"] = copied[rec["sha256"]] = rel
            artifacts.append(item)
    return artifacts


def write_bundle(out_dir: str | Path, spec: Spec, results: Results, gate: dict, verdict: list[dict],
                 environment: dict, baseline: Results | None = None, max_copy_bytes: int = MAX_COPY_BYTES) -> Path:
    """Write the bundle atomically (a half-written bundle never appears); returns its directory.

    `gate` holds the options the verdict was reached with (models, allow_stale), `verdict` one
    {model, released, ship_pct} per model, `environment` the machine that bundled it."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, BUNDLE_MANIFEST) as tmp:
        shutil.copy2(spec.path, tmp / BUNDLE_SPEC)
        artifacts = []
        for which, res in (("current", results), ("baseline", baseline)):
            if res is None:
                continue
            atomic_write_json(tmp / RESULTS_FILE[which], res.to_json())
            artifacts += _carry(res, which, tmp, max_copy_bytes)
        atomic_write_json(tmp / BUNDLE_INFO, {
            "schema": BUNDLE_SCHEMA, "spec_sha256": spec.sha256, "spec_source": str(spec.path),
            "results_source": results.path, "baseline_source": baseline.path if baseline else None,
            "gate": gate, "verdict": verdict, "environment": environment,
            "recorded_environment": results.run.get("environment"), "artifacts": artifacts,
        })
        atomic_write_json(tmp / BUNDLE_MANIFEST, {"schema": BUNDLE_SCHEMA, "files": tree_digests(tmp, exclude=(BUNDLE_MANIFEST,))})
    return out_dir


def verify_bundle(root: str | Path) -> list[str]:
    """Every file that is missing, altered or unlisted against the bundle's manifest (empty: intact)."""
    root = Path(root)
    try:
        manifest = json.loads((root / BUNDLE_MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{root / BUNDLE_MANIFEST}: missing or unreadable manifest ({type(exc).__name__})"]
    return tree_problems(root, files, exclude=(BUNDLE_MANIFEST,))


def _relocate(results: Results, root: Path, which: str, artifacts: list[dict]) -> tuple[Results, list[str]]:
    """A copy of `results` whose bundled evidence paths point into the bundle; an artifact the bundle
    only references is kept where it lies if present, else left out (and named in the returned notes)."""
    moved = {(a["id"], a["name"]): root / a["bundled"] for a in artifacts if a["results"] == which and a["bundled"]}
    doc = copy.deepcopy(results.to_json())
    absent = []
    for cid, entry in doc["criteria"].items():
        for name, rec in list(_records(entry)):
            if (cid, name) in moved:
                rec["path"] = str(moved[cid, name])
            elif not Path(rec["path"]).exists() and name != SAMPLES_KEY:
                del entry["evidence"][name]
                absent.append(f"{cid} {name} ({rec['path']}, sha256 {str(rec['sha256'])[:12]}…)")
    notes = [f"not in the bundle and not on this machine, so not re-verified: {', '.join(absent)}"] if absent else []
    return Results(doc["run"], doc["criteria"], str(root / RESULTS_FILE[which])), notes


def _info_problem(info: dict) -> str:
    """The first field of bundle.json whose type the gate cannot read (a hand edit), else ""."""
    artifacts = info["artifacts"]
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) for a in artifacts):
        return "artifacts must be a list of mappings"
    for i, a in enumerate(artifacts):
        for key in ("results", "id", "name", "path"):
            if not isinstance(a.get(key), str):
                return f"artifacts[{i}].{key} must be a string"
        if not (a.get("bundled") is None or isinstance(a["bundled"], str)):
            return f"artifacts[{i}].bundled must be a string or null"
    if not (info.get("gate") is None or isinstance(info["gate"], dict)):
        return "gate must be a mapping"
    bound = (info.get("gate") or {}).get("bound")
    if not (bound is None or isinstance(bound, dict) and all(isinstance(v, list) for v in bound.values())):
        return "gate.bound must map ids to lists of tests"
    verdict = info.get("verdict", [])
    if not isinstance(verdict, list) or not all(isinstance(v, dict) and isinstance(v.get("model"), str) for v in verdict):
        return "verdict must be a list of {model, verdict} mappings"
    return ""


def open_bundle(root: str | Path) -> Bundle:
    """Verify the bundle against its manifest (refusing any mismatch) and load what it holds."""
    root = Path(root)
    if not root.is_dir():
        raise ShiptwoError(f"{root}: no such bundle directory")
    problems = verify_bundle(root)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ShiptwoError(f"bundle refused: {problems[0]}{more}")
    try:
        info = json.loads((root / BUNDLE_INFO).read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ShiptwoError(f"{root / BUNDLE_INFO}: bundle description must be a JSON object")
        artifacts = info["artifacts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShiptwoError(f"{root / BUNDLE_INFO}: unreadable bundle description ({type(exc).__name__})") from None
    problem = _info_problem(info)
    if problem:
        raise ShiptwoError(f"{root / BUNDLE_INFO}: {problem}")
    if info.get("schema") != BUNDLE_SCHEMA:
        raise ShiptwoError(f"{root / BUNDLE_INFO}: bundle schema {info.get('schema')!r}, this shiptwo reads {BUNDLE_SCHEMA}")
    spec = load_spec(root / BUNDLE_SPEC)
    results, notes = _relocate(load_results(root / RESULTS_FILE["current"]), root, "current", artifacts)
    baseline = None
    if (root / RESULTS_FILE["baseline"]).exists():
        baseline, more = _relocate(load_results(root / RESULTS_FILE["baseline"]), root, "baseline", artifacts)
        notes += [f"baseline: {n}" for n in more]
    return Bundle(root, spec, results, baseline, info, notes)


def spec_note(bundle: Bundle, checkout_spec: str | Path | None) -> str:
    """One line saying the checkout's spec is the bundle's; a checkout spec that differs (or does not
    load) refuses the bundle (ShiptwoError): its verdict could rest on a loosened spec."""
    if checkout_spec is None or not Path(checkout_spec).is_file():
        return (f"bundle spec sha256 {bundle.spec.sha256[:12]}…; no checkout spec to compare with "
                f"(and no acceptance tests: no PASS can be re-derived, so nothing releases)")
    current = load_spec(checkout_spec).sha256
    if current != bundle.spec.sha256:
        raise ShiptwoError(f"bundle refused: its spec (sha256 {bundle.spec.sha256[:12]}…) is not the checkout's "
                           f"{checkout_spec} (sha256 {current[:12]}…)")
    return f"bundle spec is the checkout's spec ({checkout_spec}, sha256 {current[:12]}…)"


def bundle_gate_run(out_dir: str | Path, spec: Spec, results: Results, decisions: list, gate: dict,
                    environment: dict, baseline: Results | None = None) -> Path:
    """Bundle what `shiptwo gate` just judged: `decisions` (ModelDecision), `gate` its options
    ({models, allow_stale, bound: id -> bound tests or None})."""
    verdict = [{"model": d.key, "verdict": d.verdict, "ship_pct": d.ship_pct} for d in decisions]
    gate = {**gate, "bound": None if gate.get("bound") is None else {k: sorted(v) for k, v in gate["bound"].items()}}
    return write_bundle(out_dir, spec, results, gate, verdict, environment, baseline)


def gate_from_bundle(root: str | Path, checkout_spec: str | Path | None = None, models: list[str] | None = None,
                     allow_stale: bool = False, acceptance: str | Path | None = None,
                     checkout_commit: str | None = None) -> tuple[list, list[str]]:
    """Re-run the gate on a verified bundle's spec, results and baseline: (decisions, lines to print:
    spec note, artifacts not re-verifiable here, recorded vs recomputed, then the verdicts).

    The gate's options come from the caller, never from the editable bundle.json: `models`,
    `allow_stale`, and the bound tests, scanned from `acceptance` (default: beside `checkout_spec`).
    Without an acceptance directory no PASS can be re-derived (the bundle's recorded bindings are not
    trusted), so nothing releases; a checkout spec that differs from the bundle's refuses the bundle.
    `checkout_commit` (the checkout's HEAD, when it is a git checkout): the verdict is about that code, so
    results from another commit are stale, as in `shiptwo gate`; without one it is about the bundled run's."""
    from shiptwo.harness.bindings import bound_tests, scan_bindings
    from shiptwo.harness.release_gate import decide, format_decisions, one_line
    from shiptwo.paths import ACCEPTANCE_DIR, root_of_spec

    bundle = open_bundle(root)
    note = spec_note(bundle, checkout_spec)
    if acceptance is None and checkout_spec is not None:
        acceptance = root_of_spec(checkout_spec) / ACCEPTANCE_DIR
    bound = None
    if acceptance is not None and Path(acceptance).is_dir():
        base = root_of_spec(checkout_spec) if checkout_spec is not None else Path(acceptance).resolve().parent
        bound = bound_tests(scan_bindings(acceptance), base)
    from shiptwo.checkout import UNKNOWN_COMMIT

    in_checkout = checkout_commit not in (None, UNKNOWN_COMMIT)
    checkout = {"commit": checkout_commit if in_checkout else bundle.results.run.get("commit")}
    decisions = decide(bundle.spec, bundle.results, models, allow_stale, checkout, bound, baseline=bundle.baseline)
    lines = [f"bundle {bundle.root}: manifest verified ({len(bundle.info['artifacts'])} artifacts named)", note, *bundle.notes]
    if in_checkout and bundle.results.run.get("commit") != checkout_commit:
        lines.append(f"NOTE: the bundled run is of commit {str(bundle.results.run.get('commit'))[:12]}, not the checkout's "
                     f"{checkout_commit[:12]}: its results are stale here" + (" (allowed: --allow-stale)" if allow_stale else ""))
    if bound is None:
        lines.append("NOTE: no acceptance directory here: the bundle's recorded bound tests are not trusted, "
                     "so no PASS can be re-derived")
    recorded = {v["model"]: v.get("verdict") for v in bundle.info.get("verdict", [])}
    for d in decisions:
        if recorded.get(d.key) != d.verdict:
            lines.append(f"NOTE: {d.key}: recomputed verdict {d.verdict} differs from the bundle's recorded {recorded.get(d.key)}")
    return decisions, [*map(one_line, lines), format_decisions(decisions, bundle.spec, bundle.results)]
