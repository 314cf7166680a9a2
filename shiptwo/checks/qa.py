"""qa's bounds from the spec: every QAConfig field a qa criterion (AC-SHIP2-006, AC-SHIP1-006)
names among its parameters, for the run's profile; the CLI and the acceptance tests build it here."""

from __future__ import annotations

import dataclasses

from shiptwo.errors import ShiptwoError
from shiptwo.measure.qa import QAConfig


def qa_config(criterion, profile: str, **given) -> QAConfig:
    """A QAConfig whose bounds are `criterion`'s parameters under `profile`, plus `given` (the
    throughput floor and F32 tolerance other criteria own, a reference, ...). A bound that neither
    supplies is a ShiptwoError naming the criterion, never a default."""
    fields = {f.name: f for f in dataclasses.fields(QAConfig)}
    values = {name: criterion.param(name, profile) for name in criterion.parameters if name in fields}
    values.update({k: v for k, v in given.items() if v is not None})
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING]
    if missing:
        raise ShiptwoError(f"{criterion.id}: qa bound(s) {', '.join(missing)} not among its parameters in the spec")
    return QAConfig(**{**values, "profile": profile})
