"""The run identity and environment fingerprint (shiptwo.checkout)."""

import importlib.metadata
import os
import platform
import sys

from shiptwo import checkout


def test_environment_fingerprint_names_what_a_measurement_depends_on():
    env = checkout.environment()
    assert set(env["versions"]) == set(checkout.FINGERPRINT_PACKAGES)
    assert env["versions"]["numpy"] == importlib.metadata.version("numpy")
    assert env["versions"]["torch"] == importlib.metadata.version("torch")
    assert env["python"] == platform.python_version()
    assert env["cpu_count"] == os.cpu_count()
    import torch

    assert env["torch_threads"] == torch.get_num_threads()
    assert env["accelerator"] == ("none" if not torch.cuda.is_available() else env["accelerator"])
    assert env["cpu_model"] and env["shiptwo_commit"]


def test_environment_is_a_fresh_copy():
    env = checkout.environment()
    env["versions"]["torch"] = "edited"
    assert checkout.environment()["versions"]["torch"] != "edited"


def test_package_version_of_a_missing_distribution():
    assert checkout.package_version("shiptwo-no-such-package") == checkout.NOT_INSTALLED


def test_cpu_model_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.0GHz\n\n")
    assert checkout.cpu_model(info) == "Test CPU @ 2.0GHz"
    assert checkout.cpu_model(tmp_path / "absent") == (platform.processor() or "unknown")


def test_run_info_records_environment_only_when_asked(tmp_path):
    plain = checkout.run_info(tmp_path, "abc", "smoke")
    assert "environment" not in plain and plain["commit"] == checkout.UNKNOWN_COMMIT
    recorded = checkout.run_info(tmp_path, "abc", "smoke", with_environment=True)
    assert recorded["environment"] == checkout.environment()


def test_environment_without_torch_loaded_says_so(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    env = checkout.environment(import_torch=False)
    assert env["torch_threads"] == env["accelerator"] == checkout.TORCH_NOT_LOADED
    assert "torch" not in sys.modules  # nothing was imported


def test_untracked_names_only_files_git_does_not_track_whatever_their_names(tmp_path):
    """git quotes a non-ASCII path in its listing (core.quotePath): a tracked `café.yaml` must still
    read as tracked, or the gate refuses the checkout's own committed spec."""
    import subprocess

    spec = tmp_path / "spec"
    spec.mkdir()
    for name in ("café.yaml", "a b.yaml", "[x].yaml"):
        (spec / name).write_text("x\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    (spec / "x.yaml").write_text("new\n")
    files = [spec / n for n in ("café.yaml", "a b.yaml", "[x].yaml", "x.yaml")]
    assert checkout.untracked(tmp_path, files) == ["spec/x.yaml"]
