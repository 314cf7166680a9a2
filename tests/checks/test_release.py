"""What MODEL-1's release must hold: every quantized GGUF a criterion names (a missing one is an
error, never a pass with nothing measured), and every shipped file listed in the release manifest
with the SHA-256 of the file shipped (AC-SHIP1-003/004/006/010)."""

from __future__ import annotations

import shutil

import pytest

from shiptwo.checks.release import (
    named_ggufs, release_copies, release_omissions, released_ggufs, shipped_artifacts, shipped_ggufs,
)
from shiptwo.errors import ShiptwoError


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny_checkpoint):
    """A MODEL-1-like build: checkpoint, HF directory and a Q8_0 GGUF by role, and a full release of them."""
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.hf import HF_CONFIG_FILE, export_hf
    from shiptwo.formats.release import publish
    from shiptwo.model.checkpoint import load_checkpoint
    from shiptwo.paths import project_root, spec_path

    d = tmp_path_factory.mktemp("build")
    ckpt_path = d / tiny_checkpoint.name
    shutil.copy(tiny_checkpoint, ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    hf = export_hf(ckpt, d / "hf")
    q8 = export_gguf(ckpt, d / "model1-q8_0.gguf", "q8_0")
    files = {"checkpoint": ckpt_path, "hf_config": hf / HF_CONFIG_FILE, "gguf_q8_0": q8}
    manifest = publish([ckpt_path, hf, q8], d / "release", spec_path=spec_path(), repo_root=project_root())
    return files, manifest


def test_the_named_ggufs_are_returned_and_a_missing_or_empty_list_is_an_error(build):
    files, _ = build
    assert named_ggufs(files, ["q8_0"], "AC-X quantized_formats") == {"q8_0": files["gguf_q8_0"]}
    # the defect: the criterion names Q4_K_M, the build shipped none; measuring only the rest (or
    # nothing, from a starting value) would pass
    with pytest.raises(ShiptwoError, match=r"AC-X quantized_formats: the artifact has no GGUF of type q4_k_m \(its GGUF roles: gguf_q8_0\)"):
        named_ggufs(files, ["q8_0", "q4_k_m"], "AC-X quantized_formats")
    with pytest.raises(ShiptwoError, match="names no quantized format"):
        named_ggufs(files, [], "AC-X quantized_formats")
    no_ggufs = {r: p for r, p in files.items() if not r.startswith("gguf_")}
    with pytest.raises(ShiptwoError, match="its GGUF roles: none"):
        shipped_ggufs(no_ggufs, ["q8_0"], "AC-X quantized_formats")


def test_every_shipped_gguf_is_measured_beyond_the_named_ones(build, tmp_path):
    files, _ = build
    extra = {**files, "gguf_q4_k_m": tmp_path / "model1-q4_k_m.gguf"}
    assert shipped_ggufs(extra, ["q8_0"], "w") == {"q8_0": files["gguf_q8_0"], "q4_k_m": tmp_path / "model1-q4_k_m.gguf"}
    assert set(shipped_artifacts(extra, ["q8_0"], "w")) == {"checkpoint", "hf_dir", "gguf_q8_0", "gguf_q4_k_m"}
    with pytest.raises(ShiptwoError, match="w: the artifact has no hf_config file"):
        shipped_artifacts({r: p for r, p in files.items() if r != "hf_config"}, ["q8_0"], "w")


def test_the_released_ggufs_are_the_named_ones_published_whatever_roles_the_artifact_declares(build, tmp_path):
    """AC-SHIP1-005 (log-likelihoods of every shipped file) and -007 (throughput of the smallest) took
    the artifact's own GGUF roles: a store manifest whose gguf_q4_k_m role was removed (the file still
    in the release) scored Q8_0 alone and passed the leg the Q4_K_M file fails."""
    files, manifest = build
    assert released_ggufs(files, ["q8_0"], manifest.parent, "AC-X") == {"q8_0": manifest.parent / files["gguf_q8_0"].name}
    with pytest.raises(ShiptwoError, match=r"AC-X: the artifact has no GGUF of type q4_k_m"):
        released_ggufs(files, ["q8_0", "q4_k_m"], manifest.parent, "AC-X")
    extra = {**files, "gguf_q4_k_m": tmp_path / "model1-q4_k_m.gguf"}  # a role the release does not hold
    with pytest.raises(ShiptwoError, match=r"AC-X: .*model1-q4_k_m\.gguf: not in the published release"):
        released_ggufs(extra, ["q8_0"], manifest.parent, "AC-X")


def test_a_complete_release_has_no_omissions(build):
    files, manifest = build
    shipped = shipped_artifacts(files, ["q8_0"], "w")
    found, checked = release_omissions(manifest, shipped)
    in_dirs = sum(sum(1 for f in p.rglob("*") if f.is_file()) for p in shipped.values() if p.is_dir())
    assert found == [] and checked == in_dirs + sum(1 for p in shipped.values() if p.is_file())  # each file: n


def test_a_release_that_lacks_a_shipped_file_fails(build, tmp_path):
    from shiptwo.formats.release import publish, verify
    from shiptwo.paths import project_root, spec_path

    files, _ = build
    shipped = shipped_artifacts(files, ["q8_0"], "w")
    # the defect: a release published without the GGUF; it still verifies against its own manifest
    partial = publish([files["checkpoint"], shipped["hf_dir"]], tmp_path / "release", spec_path=spec_path(), repo_root=project_root())
    assert verify(partial.parent) == []
    found, _ = release_omissions(partial, shipped)
    assert found == [f"gguf_q8_0: model1-q8_0.gguf is not in {partial}"]
    with pytest.raises(ShiptwoError, match="model1-q8_0.gguf: not in the published release"):
        release_copies({"q8_0": files["gguf_q8_0"]}, partial.parent, "AC-X qa_formats")


def test_a_release_holding_another_file_under_a_shipped_name_fails(build, tmp_path):
    from shiptwo.formats.release import publish
    from shiptwo.model.checkpoint import load_checkpoint, save_checkpoint
    from shiptwo.paths import project_root, spec_path

    files, _ = build
    shipped = shipped_artifacts(files, ["q8_0"], "w")
    other = tmp_path / "other" / files["checkpoint"].name
    other.parent.mkdir()
    ckpt = load_checkpoint(files["checkpoint"])
    name = sorted(ckpt.tensors)[0]
    ckpt.tensors[name] = ckpt.tensors[name] * 2  # not the checkpoint the build wrote
    save_checkpoint(ckpt, other)
    hf_dir = tmp_path / "hf"
    shutil.copytree(shipped["hf_dir"], hf_dir)
    dropped = sorted(p for p in hf_dir.iterdir() if p.is_file())[-1]
    dropped.unlink()  # and an HF directory missing one of its files
    manifest = publish([other, hf_dir, files["gguf_q8_0"]], tmp_path / "release", spec_path=spec_path(), repo_root=project_root())
    found, _ = release_omissions(manifest, shipped)
    assert found == [f"checkpoint: {other.name} is listed in {manifest} with another SHA-256 than {files['checkpoint']}",
                     f"hf_dir: hf/{dropped.name} is not in {manifest}"]


def test_an_unreadable_manifest_is_an_error(tmp_path):
    with pytest.raises(ShiptwoError, match="not a release manifest"):
        release_omissions(tmp_path / "manifest.json", {})
