"""The one interface through which the gate asks the model wing to re-check evidence.

The harness never imports the model wing. A module of `shiptwo.checks` registers concrete
verifiers here, and the CLI imports that module before gating:

- `register_evidence(key, fn, criteria)`: `fn(path) -> list[str]` re-verifies the evidence file
  recorded under `key` (e.g. a release manifest: re-hash every file it lists); each string is a
  disagreement. A PASS of one of `criteria` lacking that record is a disagreement too.
- `register_recheck(kind, fn)`: `fn(RecheckRequest) -> list[str]` re-executes the chosen samples of
  a criterion whose spec says `samples: {recheck: kind}` (e.g. regenerate K HumanEval completions
  with the recorded artifact and re-score them), one string per disagreement.
- `register_build_clock(criteria)`: the figure of each of `criteria` is its model's build time by the
  artifact store's clock; under `--rebuild` the gate judges it again on the rebuild's own time
  (harness/rebuild_clock.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shiptwo.errors import ShiptwoError

EvidenceVerifier = Callable[[Path], list[str]]


@dataclass(frozen=True)
class RecheckRequest:
    """What a rechecker gets: the criterion, its recorded entry and evidence, and the samples to redo."""

    cid: str
    profile: str
    entry: dict  # the results entry (evidence records carry path and SHA-256)
    samples: list[dict]  # the chosen samples, as recorded (id, prompt_sha256, output, outcome/value)
    parameters: dict  # the criterion's parameters for the recorded profile
    model: str = ""  # the criterion's model key: its artifact is that model's build in the store


Rechecker = Callable[[RecheckRequest], list[str]]

_EVIDENCE: dict[str, EvidenceVerifier] = {}
_RECHECK: dict[str, Rechecker] = {}
_REQUIRED: dict[str, set[str]] = {}  # criterion id -> evidence keys its PASS must record
_BUILD_CLOCK: set[str] = set()  # criterion ids whose figure is a build's time by the store's clock


def register_evidence(key: str, fn: EvidenceVerifier, criteria: tuple[str, ...] = ()) -> None:
    """Re-verify every evidence file recorded under `key` with `fn` when gating; a PASS of one of
    `criteria` must record it (deleting the record would otherwise skip the verifier)."""
    _register(_EVIDENCE, "evidence verifier", key, fn)
    for cid in criteria:
        _REQUIRED.setdefault(cid, set()).add(key)


def required_evidence(cid: str) -> list[str]:
    """The evidence keys a PASS of `cid` must record (their verifiers are registered for it)."""
    return sorted(_REQUIRED.get(cid, ()))


def register_recheck(kind: str, fn: Rechecker) -> None:
    """Re-execute samples of criteria whose spec names `samples.recheck: kind`."""
    _register(_RECHECK, "rechecker", kind, fn)


def register_build_clock(criteria: tuple[str, ...]) -> None:
    """The figure of each of `criteria` is its model's build time by the artifact store's clock, a record
    the build wrote: `shiptwo gate --rebuild` judges it on the rebuild's own time as well."""
    _BUILD_CLOCK.update(criteria)


def build_clock_criteria() -> frozenset[str]:
    return frozenset(_BUILD_CLOCK)


def _register(table: dict, what: str, name: str, fn) -> None:
    if name in table and table[name] is not fn:
        raise ShiptwoError(f"a {what} for {name!r} is already registered ({table[name].__module__})")
    table[name] = fn


def evidence_verifiers() -> dict[str, EvidenceVerifier]:
    return dict(_EVIDENCE)


def rechecker(kind: str) -> Rechecker | None:
    return _RECHECK.get(kind)


def registered() -> dict[str, list[str]]:
    """The names registered so far (the gate prints them: nothing is re-checked silently or not at all)."""
    return {"evidence": sorted(_EVIDENCE), "recheck": sorted(_RECHECK), "build_clock": sorted(_BUILD_CLOCK)}
