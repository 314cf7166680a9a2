"""Provenance in every format and the release manifest: publish, verify, and tampering caught."""

import json

import pytest

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf
from shiptwo.formats.hf import export_hf
from shiptwo.formats.release import missing_provenance, publish, verify

from shiptwo.formats.hf import HF_CONFIG_FILE, HF_MODEL_CARD_FILE, HF_WEIGHTS_FILE
from shiptwo.formats.release import RELEASE_MANIFEST
from shiptwo.paths import SPEC_PATH


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_checkpoint):
    d = tmp_path_factory.mktemp("artifacts")
    ckpt = load_checkpoint(tiny_checkpoint)
    spec = d / "spec.yaml"
    spec.write_text("version: 1\n")
    return {
        "native": tiny_checkpoint,
        "hf": export_hf(ckpt, d / "hf"),
        "gguf": export_gguf(ckpt, d / "model-q8_0.gguf", "q8_0"),
        "spec": spec,
    }


@pytest.fixture
def release(tmp_path, artifacts):
    publish([artifacts["native"], artifacts["hf"], artifacts["gguf"]], tmp_path / "rel", artifacts["spec"])
    return tmp_path / "rel"


def test_every_format_records_provenance(artifacts):
    assert missing_provenance([artifacts["native"], artifacts["hf"], artifacts["gguf"]]) == {}


def test_a_missing_provenance_field_is_counted(tmp_path, artifacts):
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(artifacts["hf"], hf)
    cfg = json.loads((hf / HF_CONFIG_FILE).read_text())
    del cfg["data_source"]
    (hf / HF_CONFIG_FILE).write_text(json.dumps(cfg))
    missing = missing_provenance([artifacts["native"], hf, artifacts["gguf"]])
    assert missing == {str(hf / HF_CONFIG_FILE): ["data_source"]}
    with pytest.raises(ShiptwoError, match="data_source"):
        publish([hf], tmp_path / "rel", artifacts["spec"])
    assert not (tmp_path / "rel").exists()


def test_manifest_lists_every_file(release, artifacts):
    manifest = json.loads((release / RELEASE_MANIFEST).read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert artifacts["gguf"].name in paths and f"hf/{HF_WEIGHTS_FILE}" in paths and artifacts["native"].name in paths
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])
    assert manifest["provenance"]["license"] == "Apache-2.0" and len(manifest["spec_sha256"]) == 64
    assert "git_commit" in manifest
    assert verify(release) == []


def test_one_changed_byte_in_a_file_fails(release, artifacts):
    target = release / artifacts["gguf"].name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    problems = verify(release)
    assert len(problems) == 1 and "tampered" in problems[0] and str(target) in problems[0]


def test_one_changed_byte_in_the_manifest_fails(release):
    mpath = release / RELEASE_MANIFEST
    text = mpath.read_text()
    i = text.index("Apache-2.0")
    mpath.write_text(text[:i] + "B" + text[i + 1 :])  # provenance rewritten, hashes untouched
    assert any("tampered manifest" in p for p in verify(release))


def test_missing_and_extra_files_are_named(release):
    (release / "hf" / HF_MODEL_CARD_FILE).unlink()
    (release / "notes.txt").write_text("x")
    problems = verify(release)
    assert any("README.md: missing" in p for p in problems)
    assert any("notes.txt: extra" in p for p in problems)
    (release / RELEASE_MANIFEST).unlink()
    assert verify(release) == [f"{release / RELEASE_MANIFEST}: manifest missing"]


def test_cli_publish_and_verify(tmp_path, artifacts, capsys):
    rel = tmp_path / "r"
    assert main(["publish", str(artifacts["native"]), str(artifacts["gguf"]), "-o", str(rel), "--spec", str(artifacts["spec"])]) == 0
    assert main(["verify", str(rel)]) == 0
    (rel / artifacts["gguf"].name).write_bytes(b"GGUF")
    capsys.readouterr()
    assert main(["verify", str(rel)]) == 1
    err = capsys.readouterr().err
    assert "tampered" in err and "Traceback" not in err
    assert main(["publish", str(tmp_path / "absent"), "-o", str(rel)]) == 2


def test_audit_release_counts_defects_of_a_doctored_manifest(tmp_path, tiny_checkpoint):
    """The audit itself must be able to fail: on a doctored manifest it counts defects."""
    import json

    from shiptwo.formats.release import audit_release, publish

    manifest = publish([tiny_checkpoint], tmp_path / "rel", spec_path=SPEC_PATH)
    good = audit_release(manifest.parent, tmp_path / "work-good")
    assert good["defects"] == 0 and good["tamper_detected"]
    doc = json.loads(manifest.read_text())
    files = len(doc["files"])  # what the count is over: the manifest's hash and provenance, each file, the trial
    assert files >= 1 and good["checked"] == {"manifest_hash_and_provenance": 2, "files": files, "tamper_trial": 1}
    doc["files"] = []  # lists nothing: its self-hash no longer matches and every file is extra
    manifest.write_text(json.dumps(doc))
    bad = audit_release(manifest.parent, tmp_path / "work-bad")
    assert bad["defects"] >= 2 and bad["problems"] and bad["checked"]["files"] == files  # unlisted, still checked


def _rewritten(release, edit) -> dict:
    """The release's manifest passed through `edit` and written back with its self-hash recomputed
    (what anyone who edits a manifest can do)."""
    from shiptwo.formats.release import _manifest_hash

    mpath = release / RELEASE_MANIFEST
    manifest = edit(json.loads(mpath.read_text()))
    manifest["manifest_sha256"] = _manifest_hash(manifest)
    mpath.write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("path", [5, ["model-q8_0.gguf"], None])
def test_a_listed_path_that_is_not_a_string_is_one_line_not_a_traceback(release, path):
    """A number as a path raised TypeError in verify and AttributeError in load_artifact (which checks
    a file against the manifest above it); a list, TypeError in load_artifact."""
    from shiptwo.formats.artifact import load_artifact

    def edit(m):
        m["files"] = [dict(f, path=path) if f["path"] == "model-q8_0.gguf" else f for f in m["files"]]
        return m

    _rewritten(release, edit)
    mpath = release / RELEASE_MANIFEST
    problems = verify(release)
    assert problems[0].startswith(f"{mpath}: corrupt manifest (TypeError: files[") and all("\n" not in p for p in problems)
    with pytest.raises(ShiptwoError, match=rf"^{mpath}: corrupt manifest \(files\[\d+\] is not "):
        load_artifact(release / "model-q8_0.gguf")


@pytest.mark.parametrize("absolute", [False, True])
def test_a_listed_path_outside_the_release_does_not_verify(release, artifacts, absolute):
    """A manifest listing '../outside.gguf' (or its absolute path) with that file's SHA-256 in place
    of the GGUF it ships, the shipped copy removed: verify re-hashed the file outside and found
    nothing wrong with a release that does not hold it."""
    import shutil

    outside = shutil.copy(artifacts["gguf"], release.parent / "outside.gguf")
    path = str(outside) if absolute else "../outside.gguf"
    _rewritten(release, lambda m: {**m, "files": [dict(f, path=path) if f["path"] == "model-q8_0.gguf" else f
                                                  for f in m["files"]]})
    (release / "model-q8_0.gguf").unlink()
    problems = verify(release)
    assert problems == [f"{release / RELEASE_MANIFEST}: corrupt manifest (ValueError: files[{_index(release, path)}].path "
                        f"{path!r} is not a relative path inside the release)"]


def _index(release, path) -> int:
    return [f["path"] for f in json.loads((release / RELEASE_MANIFEST).read_text())["files"]].index(path)


@pytest.mark.parametrize("link", ["file", "directory"])
def test_a_listed_path_through_a_symlink_does_not_verify(release, artifacts, link):
    """The shipped GGUF replaced by a symlink to a copy outside the release (or its directory by one):
    the manifest and path are unchanged, so the '..'/absolute-path check let verify re-hash the file
    outside, and the release verified while holding only a link (dangling wherever it is copied)."""
    import shutil

    outside = release.parent / "outside"
    outside.mkdir()
    shutil.copy(artifacts["gguf"], outside / "model-q8_0.gguf")
    (release / "model-q8_0.gguf").unlink()
    if link == "file":
        (release / "model-q8_0.gguf").symlink_to(outside / "model-q8_0.gguf")
        at = "model-q8_0.gguf"
    else:  # the whole release moved under a linked directory, the manifest listing it there
        (release / "sub").symlink_to(outside, target_is_directory=True)
        _rewritten(release, lambda m: {**m, "files": [dict(f, path="sub/model-q8_0.gguf") if f["path"] == "model-q8_0.gguf"
                                                      else f for f in m["files"]]})
        at = "sub"
    assert any(p == f"{release / at}: a symbolic link, not a file of the release" for p in verify(release)), verify(release)
