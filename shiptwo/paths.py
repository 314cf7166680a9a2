"""One locator for the project's files and the active profile, used the same way by the CLI and pytest.

The project root is the nearest directory at or above the start (the working directory, or
pytest's rootdir) that holds spec/ship-two.yaml, else the checkout the package was installed
from, so every command works from any working directory; `--spec` names another spec, whose
directory's parent is then the root for its recipes. The profile comes from `--profile`, else `$SHIPTWO_PROFILE`,
else `default`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from shiptwo.errors import ShiptwoError

SPEC_PATH = "spec/ship-two.yaml"
RESULTS_PATH = "reports/results.json"
REPORT_PATH = "reports/ship-two.md"
EVIDENCE_DIR = "reports/evidence"
DEFAULT_PROFILE = "default"
PROFILE_ENV = "SHIPTWO_PROFILE"
PROFILES = ("smoke", "default", "full")
ACCEPTANCE_DIR = "acceptance"
ARTIFACT_ROOT = ".shiptwo/artifacts"
ARTIFACT_ROOT_ENV = "SHIPTWO_ARTIFACTS"

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root(start: str | Path | None = None, checkout_fallback: bool = True) -> Path:
    """The nearest directory at or above `start` (default: the working directory) holding the spec,
    else the source checkout the package was installed from (else `start` itself, when pytest asks:
    a test session belongs to its own rootdir)."""
    here = Path(start or Path.cwd()).resolve()
    for base in (here, *here.parents):
        if (base / SPEC_PATH).is_file():
            return base
    if not checkout_fallback:
        return here
    checkout = PACKAGE_DIR.parent
    if (checkout / SPEC_PATH).is_file():
        return checkout
    raise ShiptwoError(f"{here}: no {SPEC_PATH} here or above, and none in the checkout {checkout} (give --spec)")


def spec_path(explicit: str | Path | None = None, start: str | Path | None = None, checkout_fallback: bool = True) -> Path:
    """The spec file: `explicit` when given (as the user wrote it), else the project's."""
    return Path(explicit) if explicit else project_root(start, checkout_fallback) / SPEC_PATH


def root_of_spec(spec: str | Path) -> Path:
    """The project root a spec file belongs to (spec/ship-two.yaml -> the directory above spec/)."""
    return Path(spec).resolve().parent.parent


def recipe_path(model_name: str, spec: str | Path | None = None) -> Path:
    """The recipe the spec's `models.<model>.recipe` names, relative to the spec's project root."""
    spec = spec_path(spec)
    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ShiptwoError(f"{spec}: cannot read spec ({exc.__class__.__name__})") from None
    model = (data.get("models") or {}).get(model_name) if isinstance(data, dict) else None
    if not isinstance(model, dict) or not model.get("recipe"):
        raise ShiptwoError(f"{spec}: models.{model_name}.recipe: no recipe declared for model {model_name!r}")
    path = root_of_spec(spec) / model["recipe"]
    if not path.is_file():
        raise ShiptwoError(f"{spec}: models.{model_name}.recipe: {path} not found")
    return path


def results_path(explicit: str | Path | None = None, start: str | Path | None = None, checkout_fallback: bool = True) -> Path:
    return Path(explicit) if explicit else project_root(start, checkout_fallback) / RESULTS_PATH


def report_path(explicit: str | Path | None = None, start: str | Path | None = None) -> Path:
    return Path(explicit) if explicit else project_root(start) / REPORT_PATH


def evidence_root(explicit: str | Path | None = None, start: str | Path | None = None) -> Path:
    return Path(explicit) if explicit else project_root(start) / EVIDENCE_DIR


def artifact_root() -> Path:
    """`$SHIPTWO_ARTIFACTS`, else .shiptwo/artifacts under the project root."""
    env = os.environ.get(ARTIFACT_ROOT_ENV)
    return Path(env) if env else project_root() / ARTIFACT_ROOT


def active_profile(explicit: str | None = None) -> str:
    """`explicit` (--profile), else $SHIPTWO_PROFILE, else the default; an unknown name is an error."""
    profile = explicit or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if profile not in PROFILES:
        source = "--profile" if explicit else f"${PROFILE_ENV}" if os.environ.get(PROFILE_ENV) else "default"
        raise ShiptwoError(f"{source}: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    return profile
