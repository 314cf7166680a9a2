"""`shiptwo gate --rebuild`: are the artifacts the run judged what this checkout builds?

Every criterion measures an artifact in the store, and nothing else says that artifact came from the
committed recipe and code: a checkpoint trained elsewhere, dropped into the store with a rewritten
store manifest, is judged like any other, and `--rerun` re-judges the same file. So the gate
rebuilds each model under each profile its entries record, from this checkout, in a temporary store
(as a user's `shiptwo build`, with $SHIPTWO_ARTIFACTS pointing there), and compares with it the
store's set under the key that build gives (the one the acceptance tests read), every other set the
evidence names, and every evidence copy taken from a stored file (builds/reproduce.py says how).
Any difference refuses every counted PASS of the model. The rebuild runs with empty bytecode and
compiled-code caches and without the variables that steer what code runs (`harness.rerun.scrubbed_environment`,
as `--rerun` does): a kernel library or
inductor graph planted in the user's caches would otherwise shape the stored build and its rebuild
alike, and they would agree. Each rebuild's build time (the store's clock, in its manifest) goes back
to the gate, which judges the registered build-time criteria on it (harness/rebuild_clock.py).
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
from shiptwo.harness.rebuild_clock import RebuildOutcome
from shiptwo.harness.rerun import scrubbed_environment


def judged_sets(entries: list[dict], store: Path) -> dict[ArtifactSet, set[tuple[str, Path]]]:
    """The stored artifact sets the entries' evidence names (a record's path, or the store file its
    copy was taken from, under `store`), each with the (relative path, judged file) of every
    evidence copy taken from it: the bytes the criterion read, compared with the rebuild too."""
    store = store.resolve()
    sets: dict[ArtifactSet, set[tuple[str, Path]]] = {}
    for entry in entries:
        for rec in (entry.get("evidence") or {}).values():
            if not is_file_record(rec) or not isinstance(rec["path"], str):
                continue
            copied = rec.get("copied_from") if isinstance(rec.get("copied_from"), str) else None
            try:
                parts = Path(copied or rec["path"]).resolve().relative_to(store).parts
            except (ValueError, OSError):
                continue
            if len(parts) < 3:
                continue
            copies = sets.setdefault(ArtifactSet(*parts[:3]), set())
            if copied and len(parts) > 3:
                copies.add(("/".join(parts[3:]), Path(rec["path"])))
    return sets


@dataclass
class Rebuild:
    """Rebuilds what a run judged and names what differs (`shiptwo gate --rebuild`); logs what it built."""

    root: Path
    store: Path
    timeout: float | None = None
    log: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # the environment's variables left out (scrubbed_environment)

    def problems(self, entries: dict[str, list[dict]], profile: str) -> RebuildOutcome:
        """{model key: problems} over each model's recorded entries, and each rebuild's build time by
        the store's clock (where it built). Each model is rebuilt under
        every profile its entries record (`profile`: the run's, where an entry records none), and the
        store's set under the key this checkout gives compared, whether or not the evidence names it
        (the acceptance tests read that one); every other set the evidence names is rebuilt and
        compared too, and must carry that key. Each (model, profile) is built once."""
        named = {model: judged_sets(model_entries, self.store) for model, model_entries in entries.items()}
        pairs = {model: {(model, e.get("profile") or profile) for e in model_entries} for model, model_entries in entries.items()}
        for model, sets in named.items():
            pairs[model] |= {(s.model, s.profile) for s in sets}
        found = {pair: self._check(*pair, {s: c for sets in named.values() for s, c in sets.items()
                                           if (s.model, s.profile) == pair})
                 for pair in sorted(set().union(*pairs.values()))}
        return RebuildOutcome({model: [p for pair in sorted(pairs[model]) for p in found[pair][0]] for model in entries},
                              {pair: seconds for pair, (_, seconds) in found.items() if seconds is not None})

    def _check(self, model: str, profile: str, named: dict[ArtifactSet, set[tuple[str, Path]]]) -> tuple[list[str], float | None]:
        """Rebuild `model` under `profile`; compare the stored set under the rebuilt key, and every
        named set and evidence copy, with it. (problems, the rebuild's build time by the store's clock)."""
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="shiptwo-rebuild-") as tmp:
            try:
                env, self.dropped = scrubbed_environment(Path(tmp) / ".caches")
                built = rebuild_set(ArtifactSet(model, profile, ""), self.root, Path(tmp), self.timeout, env=env)
            except ShiptwoError as exc:
                self.log.append(f"{model}/{profile}: rebuild failed")
                return [f"--rebuild: {exc}"], None
            key = built.name
            rebuilt_seconds = _recorded_seconds(built)
            stored = self.store / model / profile / key
            if stored.is_dir():
                problems = [f"--rebuild: {model}/{profile}/{key}: {p}" for p in set_differences(stored, built)]
            else:
                problems = [(f"--rebuild: the store {self.store} holds no {model}/{profile} set under the key this "
                             f"checkout builds ({key}): what the acceptance tests read was not built by it")]
            for which, copies in sorted(named.items(), key=lambda kv: str(kv[0])):
                if which.key != key:
                    problems.append(f"--rebuild: the run judged {which}; this checkout builds key {key}")
                    continue
                for rel, judged in sorted(copies):
                    counterpart = built / rel
                    difference = (f"{judged} is missing" if not judged.is_file()
                                  else f"{rel} is not in the rebuild" if not counterpart.is_file()
                                  else file_difference(judged, counterpart, rel))
                    if difference:
                        problems.append(f"--rebuild: {which}: evidence copy {judged}: {difference}")
        clock = f"{rebuilt_seconds:.0f} s" if rebuilt_seconds is not None else "not recorded"
        self.log.append(f"{model}/{profile}/{key} rebuilt in {time.monotonic() - start:.0f} s (store's clock {clock}; "
                        f"its stored build: {_stored_seconds(stored)}): "
                        f"{'agrees' if not problems else f'{len(problems)} difference(s)'}")
        return problems, rebuilt_seconds

    def summary(self) -> str:
        ignored = f"; ignored from the environment: {', '.join(self.dropped)}" if self.dropped else ""
        return f"rebuild (--rebuild): {'; '.join(self.log) if self.log else 'nothing rebuilt'}{ignored}"


def _recorded_seconds(built: Path) -> float | None:
    """The build time a set's store manifest records (the store's clock around the build); None when
    it records none or cannot be read."""
    try:
        seconds = json.loads((built / ARTIFACT_MANIFEST).read_text(encoding="utf-8")).get("build_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def _stored_seconds(stored: Path) -> str:
    """The build time the stored set's manifest records, shown beside the rebuild's (the gate judges a
    build-time criterion's recorded figure against the rebuild's, harness/rebuild_clock.py)."""
    if not stored.is_dir():
        return "none in the store"
    seconds = _recorded_seconds(stored)
    return f"{seconds:.0f} s" if seconds is not None else "not recorded or unreadable"
