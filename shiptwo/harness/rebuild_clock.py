"""`shiptwo gate --rebuild` on a build-time criterion: judged again on the rebuild's own clock.

A criterion whose figure is a build's wall-clock time (AC-SHIP2-004: the store's clock around the
build, read from the stored set's manifest, the one file of the set its own hashes do not cover)
passes on a record the build wrote: edited down, or written on another machine, it says nothing of
this checkout's build here. A rebuild reads the same clock around a build the gate started from the
committed code, with empty caches (what it compiles is timed too, as in a cold `make ship`). The
model wing registers such criteria (`verifiers.register_build_clock`); the gate refuses the PASS of
one whose rebuild misses the spec's threshold for the recorded profile, or whose recorded figure is
far under the rebuild's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shiptwo.harness.spec import Criterion

# A recorded time under this share of the rebuild's (the same clock, on the machine the gate runs on) is
# no reading of this build: an edit, or another machine, which `--rebuild` is not to be run against.
RECORDED_SHARE_FLOOR = 0.5
# ... and only when it is also this many seconds under it: a smoke build's few seconds (some of them
# compiling the kernels the rebuild's empty caches lack) vary by more than 2x on a loaded machine.
RECORDED_GAP_FLOOR_S = 5.0


@dataclass(frozen=True)
class RebuildOutcome:
    """What `--rebuild` found (decide's `rebuild` returns it): per model key, the differences that
    refuse each of its counted PASSes; per (model, profile) rebuilt, the rebuild's build time by the
    store's clock (absent where the rebuild failed, which `problems` says)."""

    problems: dict[str, list[str]]
    build_seconds: dict[tuple[str, str], float] = field(default_factory=dict)


def build_clock_disagreements(criterion: Criterion, entry: dict, profile: str, rebuilt: float | None) -> tuple[list[str], str]:
    """(why a recorded PASS of the build-time criterion `criterion` (its `entry`, measured at `profile`)
    does not stand against the rebuild's time `rebuilt` (seconds; None: that build was not timed), a note
    of the judgement when it stands)."""
    where = f"{criterion.model}/{profile}"
    if rebuilt is None or not math.isfinite(rebuilt):
        return [f"--rebuild: no timed rebuild of {where}, so its build time is not judged on one"], ""
    recorded = entry.get("measured")
    shown = f"{recorded:.1f} s" if _is_number(recorded) else repr(recorded)
    problems = []
    if not criterion.is_met(rebuilt, profile):
        problems.append(f"--rebuild: the rebuild of {where} took {rebuilt:.1f} s by the store's clock, not "
                        f"{criterion.comparison} {criterion.threshold_for(profile):g} {criterion.unit} at profile {profile} "
                        f"(recorded {shown}): this checkout's build misses the budget")
    if not _is_number(recorded):
        problems.append(f"--rebuild: recorded build time {shown} is not a number to hold to the rebuild's {rebuilt:.1f} s")
    elif recorded < RECORDED_SHARE_FLOOR * rebuilt and rebuilt - recorded > RECORDED_GAP_FLOOR_S:
        problems.append(f"--rebuild: recorded build time {shown} is under {RECORDED_SHARE_FLOOR:g} of the rebuild's "
                        f"{rebuilt:.1f} s of {where} (the same clock, here): not a reading of this checkout's build")
    note = "" if problems else (f"build time judged on the rebuild's too (--rebuild): {rebuilt:.1f} s by the store's "
                                f"clock, recorded {shown}, {criterion.comparison} {criterion.threshold_for(profile):g} {criterion.unit}")
    return problems, note


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
