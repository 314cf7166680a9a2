"""Acceptance metric on shipped formats: license, data source and data license present in every
part of every format, each equal to the declared value (AC-SHIP2-012, AC-SHIP1-009)."""

from __future__ import annotations

from shiptwo.errors import ShiptwoError
from shiptwo.formats.release import provenance_by_part
from shiptwo.model.checkpoint import PROVENANCE_KEYS


def provenance_defects(paths, declared: dict[str, str]) -> dict[str, list[str]]:
    """{part: [defects]} over every part of every artifact; empty when all is as declared.

    A field is a defect when missing, or when its value differs from `declared[field]`; a field
    with no declared value must at least hold one value across all parts (the first part seen
    sets it), so a format that rewrites it is still caught.
    """
    unknown = sorted(set(declared) - set(PROVENANCE_KEYS))
    if unknown:
        raise ShiptwoError(f"declared provenance has unknown field(s) {', '.join(unknown)}")
    out: dict[str, list[str]] = {}
    agreed = dict(declared)
    for path in paths:
        for part, prov in provenance_by_part(path).items():
            defects = []
            for key in PROVENANCE_KEYS:
                if key not in prov:
                    defects.append(f"{key} missing")
                    continue
                want = agreed.setdefault(key, prov[key])
                if prov[key] != want:
                    source = "declared" if key in declared else "recorded in the first format"
                    defects.append(f"{key} is {prov[key]!r}, {source} {want!r}")
            if defects:
                out[part] = defects
    return out
