"""The builders, by model name: the one table `shiptwo build`, pytest and the tests look models up in."""

from __future__ import annotations

from shiptwo.builds import model1, model2, store
from shiptwo.builds.store import Artifacts, Builder
from shiptwo.errors import ShiptwoError
from shiptwo.paths import artifact_root

BUILDERS: dict[str, Builder] = {b.name: b for b in (model2.BUILDER, model1.BUILDER)}


def builder(model_name: str) -> Builder:
    if model_name not in BUILDERS:
        raise ShiptwoError(f"build: unknown model {model_name!r} (known: {', '.join(sorted(BUILDERS))})")
    return BUILDERS[model_name]


def build(model_name: str, profile: str, rebuild: bool = False, **options) -> Artifacts:
    """The artifacts of `model_name` under `profile`: reused when present and intact, else built."""
    return store.build(builder(model_name), profile, rebuild=rebuild, **options)


def current_keys(profiles: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """The key each model would be built under now, per profile (what `store prune` keeps)."""
    keys = {}
    for name, b in BUILDERS.items():
        for profile in profiles:
            if (artifact_root() / name / profile).is_dir():  # MODEL-1's key needs MODEL-2 built: only where present
                keys[(name, profile)] = store.store_key(b, b.fingerprint(profile, {}))[0]
    return keys
