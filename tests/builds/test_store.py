"""Artifact store: real smoke build, reuse, tamper refusal/rebuild, atomic publish, serialized builders."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_text, sha256_file
from shiptwo.builds import store
from shiptwo.builds.registry import BUILDERS, build
from shiptwo.builds.store import Builder, Fingerprint, import_closure, verify

from shiptwo.builds.store import ARTIFACT_LOCK
from shiptwo.paths import ARTIFACT_ROOT_ENV
from shiptwo.training.loop import BEST_CHECKPOINT


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


@pytest.fixture
def counting_builder(monkeypatch):
    """A small builder that writes two files and counts its runs (exercises the store, not training)."""
    runs = []

    def fingerprint(profile, options):
        return Fingerprint({"profile": profile, "text": options.get("text", "hello")})

    def run(profile, fp, workdir: Path):
        runs.append(profile)
        atomic_write_text(workdir / "a.txt", fp.parts["text"])
        atomic_write_text(workdir / "sub" / "b.txt", "b")
        return {"tokenizer": "a.txt", "extra": "sub/b.txt"}, {"profile": profile}, {"steps": 1}

    monkeypatch.setitem(BUILDERS, "toy", Builder("toy", fingerprint, run, entry="shiptwo.builds.store",
                                                    roles=lambda profile, fp: {"tokenizer", "extra"}))
    return runs


def test_real_smoke_build_then_reuse(store_root):
    a = build("model2", "smoke")
    assert not a.reused and a.root.parent == store_root / "model2" / "smoke"
    for p in (a.tokenizer, a.checkpoint, a.final_checkpoint, a.corpus_manifest, a.train_log, a.loss_curve, a.manifest):
        assert p.is_file(), p
    manifest = json.loads(a.manifest.read_text())
    assert manifest["files"][BEST_CHECKPOINT] == sha256_file(a.checkpoint)
    assert a.summary["steps"] > 0 and a.recipe["profile"] == "smoke"
    corpus = json.loads(a.corpus_manifest.read_text())
    assert corpus["data_license"] == "PSF-2.0" and corpus["splits"]["train"]["tokens"] > 0
    b = build("model2", "smoke")
    assert b.reused and b.root == a.root and b.summary == a.summary
    # loading a stored artifact checks it against the store's manifest: one flipped bit is refused
    from shiptwo.formats.artifact import load_artifact

    good = a.checkpoint.read_bytes()
    assert load_artifact(a.checkpoint).config.vocab_size == a.recipe["model"]["vocab_size"]
    a.checkpoint.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ShiptwoError, match=r"best\.safetensors: SHA-256 differs from the one .*manifest\.json records"):
        load_artifact(a.checkpoint)
    a.checkpoint.write_bytes(good)


def test_reuse_and_key_changes_with_the_inputs(store_root, counting_builder):
    a, b = build("toy", "smoke"), build("toy", "smoke")
    assert counting_builder == ["smoke"] and b.reused and b.root == a.root
    assert a.files["extra"].read_text() == "b" and a.tokenizer == a.root / "a.txt"
    c = build("toy", "smoke", text="other")
    assert c.root != a.root and len(counting_builder) == 2


def test_tampered_artifact_is_refused_then_rebuilt_on_request(store_root, counting_builder):
    a = build("toy", "smoke")
    (a.root / "sub" / "b.txt").write_text("tampered")
    assert "b.txt" in verify(a.root)
    with pytest.raises(ShiptwoError, match=r"b\.txt: SHA-256 differs.*--rebuild"):
        build("toy", "smoke")
    again = build("toy", "smoke", rebuild=True)
    assert not again.reused and verify(again.root) is None and len(counting_builder) == 2
    (again.root / "a.txt").unlink()
    with pytest.raises(ShiptwoError, match=r"a\.txt: missing"):
        build("toy", "smoke")


def test_a_set_stored_under_another_key_is_refused_then_rebuilt_on_request(store_root, counting_builder):
    """An older build copied under the key this code gives (its files match its own manifest) was
    reused as if this code had built it."""
    import shutil

    old = build("toy", "smoke", text="older")
    key = store.store_key(BUILDERS["toy"], BUILDERS["toy"].fingerprint("smoke", {}))[0]
    shutil.copytree(old.root, old.root.parent / key)
    with pytest.raises(ShiptwoError, match=rf"manifest.json: records the set toy/smoke/{old.key}, but it is stored as "
                                           rf"toy/smoke/{key} \(copied or renamed from another build\).*--rebuild"):
        build("toy", "smoke")
    again = build("toy", "smoke", rebuild=True)
    assert not again.reused and again.key == key and again.tokenizer.read_text() == "hello" and len(counting_builder) == 2


def test_the_store_times_the_whole_build_and_a_reuse_reads_the_same_figure(store_root, monkeypatch):
    """AC-SHIP2-004 measures the store's clock, not the builder's claim: a builder that spends time
    outside its trainer and reports 0 s of its own is still timed in full."""
    import time

    def run(profile, fp, workdir):
        time.sleep(0.3)  # e.g. data preparation, outside the trainer's clock
        atomic_write_text(workdir / "a.txt", "x")
        return {"tokenizer": "a.txt"}, {}, {"wall_seconds": 0.0}  # the trainer's figure about itself

    monkeypatch.setitem(BUILDERS, "slow", Builder("slow", lambda p, o: Fingerprint({}), run, entry="shiptwo.builds.store",
                                                     roles=lambda p, fp: {"tokenizer"}))
    a, b = build("slow", "smoke"), build("slow", "smoke")
    assert a.build_seconds >= 0.3 and not a.build_resumed and a.summary["wall_seconds"] == 0.0
    assert b.reused and b.build_seconds == a.build_seconds == json.loads(a.manifest.read_text())["build_seconds"]


def test_failed_build_leaves_nothing_visible(store_root, monkeypatch):
    def run(profile, fp, workdir):
        atomic_write_text(workdir / "half.txt", "x")
        raise ShiptwoError("boom")

    monkeypatch.setitem(BUILDERS, "broken", Builder("broken", lambda p, o: Fingerprint({}), run, entry="shiptwo.builds.store",
                                                       roles=lambda p, fp: {"half"}))
    with pytest.raises(ShiptwoError, match="boom"):
        build("broken", "smoke")
    assert [p.name for p in (store_root / "broken" / "smoke").iterdir()] == [ARTIFACT_LOCK]


def test_concurrent_builders_serialize_and_build_once(store_root, counting_builder):
    results, errors = [], []

    def go():
        try:
            results.append(build("toy", "default"))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and counting_builder == ["default"]
    assert len({r.root for r in results}) == 1 and sum(not r.reused for r in results) == 1


def test_unknown_model_or_profile_is_an_error(store_root):
    with pytest.raises(ShiptwoError, match="unknown model 'model9'"):
        build("model9", "smoke")
    with pytest.raises(ShiptwoError, match="unknown profile 'huge'"):
        build("model2", "huge")


def test_cli_build_errors_are_one_line_and_non_zero(store_root, capsys):
    from shiptwo.cli import main

    assert main(["build", "model9", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown model 'model9'" in err and "Traceback" not in err


def test_cli_build_reports_a_built_toy_artifact(store_root, counting_builder, capsys):
    from shiptwo.cli import main

    assert main(["build", "toy", "--profile", "smoke"]) == 0
    assert "toy/smoke built at" in capsys.readouterr().out
    assert main(["build", "toy", "--profile", "smoke"]) == 0
    assert "toy/smoke reused at" in capsys.readouterr().out


def test_a_killed_builders_temp_dir_is_cleaned_under_the_lock(store_root, counting_builder):
    stale = store_root / "toy" / "smoke" / ".tmp-deadbeef-x"
    (stale / "sub").mkdir(parents=True)
    a = build("toy", "smoke")
    assert not stale.exists() and verify(a.root) is None


def _work_dir(base: Path, name: str, owner: dict | None) -> Path:
    d = base / name
    d.mkdir(parents=True)
    if owner is not None:
        (d / store.OWNER_FILE).write_text(json.dumps(owner))
    return d


def test_a_work_dir_whose_owner_is_alive_is_never_removed(store_root, counting_builder):
    import os
    import subprocess
    import sys

    base = store_root / "toy" / "smoke"
    me = store._this_process()
    live = _work_dir(base, ".tmp-aaaa-live", me)
    elsewhere = _work_dir(base, ".tmp-aaaa-other-host", {**me, "host": "another-host"})
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = _work_dir(base, ".tmp-aaaa-dead", {**me, "pid": int(done.stdout)})
    reused_pid = _work_dir(base, ".tmp-aaaa-reused", {**me, "start": "0"})  # our pid, another process's start time
    a = build("toy", "smoke")
    assert live.is_dir() and elsewhere.is_dir() and not dead.exists() and not reused_pid.exists()
    assert store.owner_alive(live) and not store.owner_alive(base / "nothing-here")
    assert sorted(p.name for p in base.iterdir()) == sorted([store.ARTIFACT_LOCK, live.name, elsewhere.name, a.key])
    assert os.getpid() == me["pid"]


def test_a_build_killed_mid_way_resumes_from_its_last_state(tmp_path, monkeypatch):
    """A real smoke build in a subprocess, SIGKILLed after its first saved state: the next build
    adopts the work directory and continues from that state, and nothing stale remains."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from shiptwo.paths import recipe_path, spec_path
    from shiptwo.training.loop import TRAIN_STATE

    project, artifacts = tmp_path / "project", tmp_path / "artifacts"
    (project / "spec" / "recipes").mkdir(parents=True)
    shutil.copy(spec_path(), project / "spec" / "ship-two.yaml")
    doc = yaml.safe_load(recipe_path("model2").read_text())
    doc["profiles"]["smoke"]["train"].update(max_steps=300, checkpoint_interval=20)  # long enough to be caught
    (project / "spec" / "recipes" / "model2.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, ARTIFACT_ROOT_ENV: str(artifacts), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "shiptwo", "build", "model2", "--profile", "smoke"], cwd=project,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = artifacts / "model2" / "smoke"
    deadline = time.monotonic() + 240
    try:
        while not list(base.glob(f".tmp-*/{TRAIN_STATE}")):
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (work,) = base.glob(".tmp-*")
    assert (work / store.OWNER_FILE).is_file() and not store.owner_alive(work)

    monkeypatch.chdir(project)
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(artifacts))
    a = build("model2", "smoke")
    (resumed_at,) = a.summary["resumed_at_steps"]
    assert resumed_at % 20 == 0 and 0 < resumed_at < 300 and a.summary["steps"] == 300
    assert not list(base.glob(".tmp-*")) and verify(a.root) is None and a.root.name == work.name.split("-")[1]
    assert store.OWNER_FILE not in json.loads(a.manifest.read_text())["files"]
    assert a.build_resumed and a.build_seconds > 0  # its clock covers the last leg only, and says so
    train_steps = [json.loads(x)["step"] for x in a.train_log.read_text().splitlines() if '"train"' in x]
    assert train_steps == list(range(1, 301))  # one record per step: the steps after the kill were redone, once


def test_cache_key_covers_the_import_closure_not_a_hand_list():
    closure = set(import_closure("shiptwo.builds.model1"))
    # MODEL-1's build imports the GGUF reader through the exporter: an edit there must change the key
    assert {"shiptwo.formats.gguf_load", "shiptwo.formats.gguf_export", "shiptwo.builds.model2",
            "shiptwo.training.loop", "shiptwo.model.llama", "shiptwo.data.chat"} <= closure
    assert not any(m.startswith("shiptwo.harness") for m in import_closure("shiptwo.builds.model2"))


def test_an_edit_anywhere_in_the_closure_changes_the_key(monkeypatch, tmp_path):
    real = store._module_file
    edited = tmp_path / "gguf_load.py"
    edited.write_text(real("shiptwo.formats.gguf_load").read_text() + "\n# an edit\n")
    before = store.code_version("shiptwo.builds.model1")
    monkeypatch.setattr(store, "_module_file", lambda name: edited if name == "shiptwo.formats.gguf_load" else real(name))
    assert store.code_version("shiptwo.builds.model1") != before


def test_an_edit_to_a_compiled_kernel_changes_the_key(monkeypatch, tmp_path):
    """The training kernels (C) shape MODEL-2's weights as much as its Python does."""
    real = store._module_file
    copy = tmp_path / "train_kernels.py"
    copy.write_text(real("shiptwo.model.train_kernels").read_text())
    kernel = tmp_path / "train_kernels.c"
    kernel.write_text(real("shiptwo.model.train_kernels").with_name("train_kernels.c").read_text())
    monkeypatch.setattr(store, "_module_file", lambda name: copy if name == "shiptwo.model.train_kernels" else real(name))
    before = store.code_version("shiptwo.builds.model2")
    kernel.write_text(kernel.read_text() + "\n/* an edit */\n")
    assert store.code_version("shiptwo.builds.model2") != before


def test_the_environment_is_part_of_the_key(monkeypatch):
    b = Builder("toy", lambda p, o: Fingerprint({"x": 1}), None, entry="shiptwo.builds.store", roles=lambda p, fp: set())
    key = store.store_key(b, Fingerprint({"x": 1}))[0]
    monkeypatch.setattr(store.sys, "version", "3.99.0 (elsewhere)")
    assert store.store_key(b, Fingerprint({"x": 1}))[0] != key


def test_prune_removes_superseded_keys_only(store_root, counting_builder):
    a = build("toy", "smoke")
    b = build("toy", "smoke", text="other")
    removed = store.prune({("toy", "smoke"): b.key})
    assert removed == [a.root] and not a.root.exists() and verify(b.root) is None


def test_profile_comes_from_the_environment_in_the_cli(store_root, counting_builder, monkeypatch, capsys):
    """`SHIPTWO_PROFILE=smoke shiptwo build …` builds the smoke profile (the CLI honours the variable)."""
    from shiptwo.cli import main

    monkeypatch.setenv("SHIPTWO_PROFILE", "smoke")
    assert main(["build", "toy"]) == 0
    assert "toy/smoke built at" in capsys.readouterr().out
    monkeypatch.setenv("SHIPTWO_PROFILE", "huge")
    assert main(["build", "toy"]) == 2
    assert "SHIPTWO_PROFILE" in capsys.readouterr().err
