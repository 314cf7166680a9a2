"""`shiptwo gate --rebuild`: are the artifacts the run judged what this checkout builds?

Every criterion measures an artifact in the store, and nothing else says that artifact came from the
committed recipe and code: a checkpoint trained elsewhere, dropped into the store with a rewritten
store manifest, is judged like any other, and `--rerun` re-judges the same file. So the gate rebuilds
each artifact set the run's evidence names, from this checkout, in a temporary store (as a user's
`shiptwo build`, with $SHIPTWO_ARTIFACTS pointing there), and compares every file of the stored set
and every evidence copy taken from it (builds/reproduce.py says how). Any difference refuses every
counted PASS of the model.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shiptwo.builds.reproduce import (
    ArtifactSet,
    file_difference,
    rebuild_set,
    set_differences,
)
from shiptwo.builds.store import ARTIFACT_MANIFEST
from shiptwo.errors import ShiptwoError
from shiptwo.harness.evidence import is_file_record


def judged_sets(entries: list[dict], store: Path) -> dict[ArtifactSet, set[tuple[str, Path]]]:
    """The stored artifact sets the entries' evidence names (a record's path, or the store file its
    copy was taken from, under `store`), each with the (relative path, judged file) of every
    evidence copy taken from it: the bytes the criterion read, compared with the rebuild too."""
    store = store.resolve()
    sets: dict[ArtifactSet, set[tuple[str, Path]]] = {}
    for entry in entries:
        for rec in (entry.get("evidence") or {}).values():
            if not is_file_record(rec):
                continue
            source = Path(rec.get("copied_from") or rec["path"])
            try:
                parts = source.resolve().relative_to(store).parts
            except ValueError:
                continue
            if len(parts) < 3:
                continue
            copies = sets.setdefault(ArtifactSet(*parts[:3]), set())
            if rec.get("copied_from") and len(parts) > 3:
                copies.add(("/".join(parts[3:]), Path(rec["path"])))
    return sets


@dataclass
class Rebuild:
    """Rebuilds what a run judged and names what differs (`shiptwo gate --rebuild`); logs what it built."""

    root: Path
    store: Path
    timeout: float | None = None
    log: list[str] = field(default_factory=list)

    def problems(self, entries: dict[str, list[dict]]) -> dict[str, list[str]]:
        """{model key: problems} for each model's recorded entries, each artifact set they name
        rebuilt once; a model whose evidence names no stored set is a problem too (nothing then
        shows that what was judged was built here)."""
        named = {model: judged_sets(model_entries, self.store) for model, model_entries in entries.items()}
        copies: dict[ArtifactSet, set[tuple[str, Path]]] = {}
        for sets in named.values():
            for which, judged in sets.items():
                copies.setdefault(which, set()).update(judged)
        found = {which: self._check(which, judged) for which, judged in sorted(copies.items(), key=lambda kv: str(kv[0]))}
        return {model: ([] if sets else [f"--rebuild: no evidence of {model} names an artifact set in the store {self.store}"])
                + [p for which in sorted(sets, key=str) for p in found[which]] for model, sets in named.items()}

    def _check(self, which: ArtifactSet, copies: set[tuple[str, Path]]) -> list[str]:
        stored = self.store / which.model / which.profile / which.key
        if not stored.is_dir():
            return [f"--rebuild: the judged artifact set {stored} is no longer in the store"]
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="shiptwo-rebuild-") as tmp:
            try:
                built = rebuild_set(which, self.root, Path(tmp), self.timeout)
            except ShiptwoError as exc:
                return [f"--rebuild: {exc}"]
            if built.name != which.key:
                problems = [f"--rebuild: the run judged {which}; this checkout builds key {built.name}"]
            else:
                problems = [f"--rebuild: {which}: {p}" for p in set_differences(stored, built)]
                for rel, judged in sorted(copies):
                    counterpart = built / rel
                    difference = (f"{rel} is not in the rebuild" if not counterpart.is_file()
                                  else file_difference(judged, counterpart, rel))
                    if difference:
                        problems.append(f"--rebuild: {which}: evidence copy {judged}: {difference}")
        self.log.append(f"{which} rebuilt in {time.monotonic() - start:.0f} s (its stored build: "
                        f"{_stored_seconds(stored)}): {'agrees' if not problems else f'{len(problems)} difference(s)'}")
        return problems

    def summary(self) -> str:
        return f"rebuild (--rebuild): {'; '.join(self.log) if self.log else 'nothing rebuilt'}"


def _stored_seconds(stored: Path) -> str:
    """The build time the stored set's manifest records: a clock reading the rebuild cannot compare,
    shown beside the rebuild's own for a reader to weigh (AC-SHIP2-004 judges it)."""
    try:
        seconds = json.loads((stored / ARTIFACT_MANIFEST).read_text(encoding="utf-8")).get("build_seconds")
    except (OSError, ValueError, AttributeError):
        return "unreadable"
    return f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "not recorded"
