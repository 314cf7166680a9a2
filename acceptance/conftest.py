"""Session fixtures that build (or reuse from the artifact store) the real artifacts under test.

Each fixture builds what it needs through the same library calls as `shiptwo build`, so
`pytest acceptance -m model2` works alone on a fresh checkout.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def profile(request) -> str:
    from shiptwo.harness.plugin import active_profile

    return active_profile(request.config)


@pytest.fixture(scope="session")
def spec_path(request):
    from shiptwo.harness.plugin import active_spec_path

    return active_spec_path(request.config)


@pytest.fixture(scope="session")
def threshold(spec_path, profile):
    """threshold(ID): another criterion's threshold for this run's profile, read from the spec
    (for checks such as qa that apply a bound another criterion owns)."""
    from shiptwo.harness.spec import load_spec

    spec = load_spec(spec_path)
    return lambda cid: spec.criterion(cid).threshold_for(profile)


@pytest.fixture(scope="session")
def parameter(spec_path, profile):
    """parameter(ID, name): another criterion's parameter for this run's profile, read from the spec
    (for checks that apply a bound another criterion owns, as `threshold` does for thresholds)."""
    from shiptwo.harness.spec import load_spec

    spec = load_spec(spec_path)
    return lambda cid, name: spec.criterion(cid).param(name, profile)


# --- MODEL-2 artifacts (trainer / artifact store) -------------------------------------------


@pytest.fixture(scope="session")
def model2_artifacts(profile):
    from shiptwo.builds.registry import build

    return build("model2", profile)


# --- MODEL-1 artifacts (instruction tuning from MODEL-2, with its release formats) ------------


@pytest.fixture(scope="session")
def model1_artifacts(profile):
    from shiptwo.builds.registry import build

    return build("model1", profile)


@pytest.fixture(scope="session")
def model2_checkpoint(model2_artifacts):
    """MODEL-2's best checkpoint, loaded once (its SHA-256 checked against the store's manifest)."""
    from shiptwo.formats.artifact import load_artifact

    return load_artifact(model2_artifacts.checkpoint)


@pytest.fixture(scope="session")
def model1_checkpoint(model1_artifacts):
    """MODEL-1's shipped checkpoint, loaded once (its SHA-256 checked against the store's manifest)."""
    from shiptwo.formats.artifact import load_artifact

    return load_artifact(model1_artifacts.checkpoint)


# --- exports (issue 4): HF directory and GGUF files of each model's best checkpoint ------------
# Built once per session (per xdist worker) into the run's evidence directory, which survives the
# run for the gate to re-hash (not the artifact store, whose directories are hashed).


def _export(run_evidence_dir, artifacts, fmt: str, dtype: str = "f32"):
    import os

    from shiptwo.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(artifacts.checkpoint)
    out = run_evidence_dir / "exports" / os.environ.get("PYTEST_XDIST_WORKER", "main") / f"{artifacts.model}-{fmt}-{dtype}"
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from shiptwo.formats.hf import export_hf

        return export_hf(ckpt, out / f"{artifacts.model}-hf")
    from shiptwo.formats.gguf_export import export_gguf

    return export_gguf(ckpt, out / f"{artifacts.model}-{dtype}.gguf", dtype)


@pytest.fixture(scope="session")
def model2_hf_dir(run_evidence_dir, model2_artifacts):
    return _export(run_evidence_dir, model2_artifacts, "hf")


@pytest.fixture(scope="session")
def model2_gguf_f32(run_evidence_dir, model2_artifacts):
    return _export(run_evidence_dir, model2_artifacts, "gguf", "f32")


@pytest.fixture(scope="session")
def model2_gguf_q8_0(run_evidence_dir, model2_artifacts):
    return _export(run_evidence_dir, model2_artifacts, "gguf", "q8_0")


@pytest.fixture(scope="session")
def model1_hf_dir(model1_artifacts):
    """MODEL-1 ships its HF directory: the one its build wrote, not a re-export."""
    return model1_artifacts.files["hf_config"].parent


@pytest.fixture(scope="session")
def model1_gguf_f32(run_evidence_dir, model1_artifacts):
    return _export(run_evidence_dir, model1_artifacts, "gguf", "f32")


@pytest.fixture(scope="session")
def model1_gguf_q8_0(model1_artifacts):
    """MODEL-1 ships as a Q8_0 GGUF: the file its build wrote."""
    return model1_artifacts.files["gguf_q8_0"]


@pytest.fixture(scope="session")
def model1_quantized_ggufs(model1_artifacts, parameter) -> dict:
    """The published copy of every quantized GGUF MODEL-1 ships, by type (q8_0 ours, q4_k_m llama.cpp's):
    each type AC-SHIP1-003's quantized_formats names is required (an ERROR if the artifact or its
    release lacks one), not only the roles the artifact declares."""
    from shiptwo.checks.release import released_ggufs

    where = "AC-SHIP1-003 quantized_formats"
    return released_ggufs(model1_artifacts.files, parameter("AC-SHIP1-003", "quantized_formats"),
                          model1_artifacts.files["release_manifest"].parent, where)
