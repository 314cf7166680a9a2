"""`shiptwo gate --rebuild`: a store holding artifacts this checkout does not build is refused.

Real builds (MODEL-2's smoke recipe, through `python -m shiptwo build` as the gate runs it): an
honest stored set agrees with its rebuild, wall-clock readings aside; a swapped checkpoint, an edited
training log, a forged evidence copy and a set under a key this code does not give are each named;
and a rebuild compiles afresh, so bytecode planted in the checkout's __pycache__ never builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shiptwo.builds.reproduce import ArtifactSet, file_difference, rebuild_set
from shiptwo.builds.store import ARTIFACT_MANIFEST
from shiptwo.checks.rebuild import Rebuild, judged_sets
from shiptwo.errors import ShiptwoError
from shiptwo.harness.release_gate import (
    EXIT_HOLD,
    REFUSED,
    RELEASE,
    decide,
    refuse_uncommitted_code,
)
from shiptwo.harness.rebuild_clock import RebuildOutcome
from shiptwo.harness.rerun import scrubbed_environment
from shiptwo.harness.results import load_results
from shiptwo.harness.spec import load_spec
from shiptwo.model.checkpoint import load_checkpoint, safetensors_bytes, save_checkpoint
from shiptwo.paths import ARTIFACT_ROOT_ENV, project_root
from shiptwo.training.loop import BEST_CHECKPOINT, TRAIN_LOG, TRAIN_STATE
from tests.harness.test_gate_rerun import TEST, Project

REPO = project_root()


PLANTED = "planted bytecode ran"


@pytest.fixture(scope="module")
def planted_checkout(tmp_path_factory) -> Path:
    """A copy of this checkout (its files git does not ignore) whose git-ignored __pycache__ holds
    bytecode for `shiptwo/__main__.py` that stops any run: an unchecked-hash .pyc, which Python loads
    without looking at the source."""
    import importlib.util
    import py_compile

    copy = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    plant = copy.parent / "plant.py"
    plant.write_text(f"raise SystemExit({PLANTED!r})\n")
    main = copy / "shiptwo" / "__main__.py"
    py_compile.compile(str(plant), cfile=importlib.util.cache_from_source(str(main)), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return copy


@pytest.fixture(scope="module")
def stored(tmp_path_factory, planted_checkout) -> Path:
    """A real smoke build of MODEL-2 in its own store: the set a run judged. Built as `--rebuild`
    builds, from the planted copy of this checkout: the rebuild compiles afresh, so the plant never runs."""
    store = tmp_path_factory.mktemp("store")
    rebuild_set(ArtifactSet("model2", "smoke", "?"), planted_checkout, store,
                env=scrubbed_environment(tmp_path_factory.mktemp("caches"))[0])
    return store


def test_rebuild_compiles_afresh_not_bytecode_planted_in_pycache(planted_checkout, stored):
    """The checkout's __pycache__ is git-ignored, so `refuse_uncommitted_code` cannot see a .pyc there;
    a plain run loads it in place of the committed source. The rebuild (the `stored` set) built anyway."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    probe = subprocess.run([sys.executable, "-m", "shiptwo", "--help"], cwd=planted_checkout, env=env,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 1 and PLANTED in probe.stderr, "the plant is what a plain run executes"
    [built] = [p for p in (stored / "model2" / "smoke").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert (built / BEST_CHECKPOINT).is_file() and (built / ARTIFACT_MANIFEST).is_file()


def test_rebuild_compiles_kernels_afresh_not_a_library_planted_in_the_cache(stored, tmp_path, monkeypatch):
    """Compiled kernels are cached under $XDG_CACHE_HOME (~/.cache) by the hash of their source,
    compiler, flags and CPU, and a library found there is loaded without a rebuild: one planted under
    the honest training kernels' name (a restored CI cache can carry it) shaped the stored build and
    its rebuild alike, so they agreed. The rebuild gets empty caches of its own, as `--rerun` does."""
    from shiptwo.model import kernels, train_kernels

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    cc = kernels.shutil.which("cc") or kernels.shutil.which("gcc")
    cached = kernels._build(cc, train_kernels.SOURCE)  # the name the honest source is cached under
    assert cached.is_relative_to(tmp_path / "home-cache")
    ran = tmp_path / "planted-library-ran"
    planted = tmp_path / "planted.c"
    planted.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void planted(void) '
                       f'{{ FILE *f = fopen("{ran}", "w"); if (f) fclose(f); }}\n')
    subprocess.run([cc, *kernels.CFLAGS, str(planted), "-o", str(cached)], check=True)
    store, built = _fresh_copy(stored, tmp_path)
    rebuild = Rebuild(REPO, store)
    found = rebuild.problems({"model2": _entries(built)}, "smoke")
    assert not ran.exists(), "the rebuild loaded the library planted in the user's cache"
    assert found.problems["model2"] == [], rebuild.log


def test_rebuild_ignores_variables_that_steer_what_code_runs(stored, tmp_path, monkeypatch):
    """PYTHONPATH (a sitecustomize.py), LD_PRELOAD (a library) and CC (a compiler wrapper), set where the
    gate runs, each ran the forger's code in the rebuild, and so could shape the stored build and its
    rebuild alike. The rebuild leaves them out, says so, and builds what it stored."""
    from shiptwo.model import kernels

    cc = kernels.shutil.which("cc") or kernels.shutil.which("gcc")
    marks = {name: tmp_path / f"{name}-ran" for name in ("PYTHONPATH", "LD_PRELOAD", "CC")}
    (tmp_path / "forger").mkdir()
    (tmp_path / "forger" / "sitecustomize.py").write_text(f"open({str(marks['PYTHONPATH'])!r}, 'w').close()\n")
    preload = tmp_path / "preload.c"
    preload.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void planted(void) '
                       f'{{ FILE *f = fopen("{marks["LD_PRELOAD"]}", "w"); if (f) fclose(f); }}\n')
    subprocess.run([cc, "-shared", "-fPIC", str(preload), "-o", str(tmp_path / "libpreload.so")], check=True)
    wrapper = tmp_path / "cc"
    wrapper.write_text(f'#!/bin/sh\ntouch {marks["CC"]}\nexec {cc} "$@"\n')
    wrapper.chmod(0o755)
    for name, value in (("PYTHONPATH", tmp_path / "forger"), ("LD_PRELOAD", tmp_path / "libpreload.so"), ("CC", wrapper)):
        monkeypatch.setenv(name, str(value))
    store, built = _fresh_copy(stored, tmp_path)
    rebuild = Rebuild(REPO, store)
    found = rebuild.problems({"model2": _entries(built)}, "smoke")
    assert [name for name, mark in marks.items() if mark.exists()] == [], "the forger's code ran in the rebuild"
    assert found.problems["model2"] == [], rebuild.log
    ignored = rebuild.summary().split("ignored from the environment: ", 1)[-1].split(", ")
    assert set(marks) <= set(ignored), rebuild.summary()  # said, not silent


def _fresh_copy(stored: Path, tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "store"
    shutil.copytree(stored, store)
    [built] = [p for p in (store / "model2" / "smoke").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return store, built


def _entries(built: Path, copies: dict[str, Path] | None = None) -> list[dict]:
    evidence = {"checkpoint": {"kind": "file", "path": str(built / BEST_CHECKPOINT), "sha256": "x"}}
    for name, path in (copies or {}).items():
        evidence[name] = {"kind": "file", "path": str(path), "sha256": "x", "copied_from": str(built / name)}
    return [{"id": "AC-SHIP2-001", "evidence": evidence}]


def test_an_honest_store_agrees_with_its_rebuild_and_a_tampered_one_is_named(stored, tmp_path):
    store, built = _fresh_copy(stored, tmp_path)
    rebuild = Rebuild(REPO, store)
    honest = rebuild.problems({"model2": _entries(built)}, "smoke")
    assert honest.problems == {"model2": []}, rebuild.log
    assert "agrees" in rebuild.summary()
    # the rebuild's own build time, by the store's clock, goes back to the gate (which judges AC-SHIP2-004 on it)
    [(pair, seconds)] = honest.build_seconds.items()
    assert pair == ("model2", "smoke") and 0 < seconds < 120, seconds
    assert f"(store's clock {seconds:.0f} s; its stored build: " in rebuild.summary()

    # the defects: a checkpoint trained otherwise (one weight moved, a valid file), a loss edited in the
    # log, a step's tokens/s edited (a clock reading: not a defect), and an evidence copy that is not the
    # stored file (the criterion read other bytes)
    ckpt = load_checkpoint(built / BEST_CHECKPOINT)
    name = min(ckpt.tensors)
    ckpt.tensors = {**ckpt.tensors, name: ckpt.tensors[name].clone().add_(1e-3)}
    save_checkpoint(ckpt, built / BEST_CHECKPOINT)
    log = [json.loads(line) for line in (built / TRAIN_LOG).read_text().splitlines()]
    log[3]["loss"] -= 0.5
    log[4]["tokens_per_s"] *= 7
    (built / TRAIN_LOG).write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in log))
    manifest = json.loads((built / ARTIFACT_MANIFEST).read_text())
    manifest["summary"]["steps"] += 100  # what the build claims about itself, unlike its clock, must agree too
    manifest["build_seconds"] = 1.0
    (built / ARTIFACT_MANIFEST).write_text(json.dumps(manifest))
    copy = tmp_path / "evidence" / "tokenizer.json"
    copy.parent.mkdir()
    copy.write_text((built / "tokenizer.json").read_text().replace('"<|endoftext|>"', '"<|eot|>"', 1))
    rebuild = Rebuild(REPO, store)
    found = rebuild.problems({"model2": _entries(built, {"tokenizer.json": copy})}, "smoke").problems["model2"]
    text = "\n".join(found)
    assert f"{BEST_CHECKPOINT} differs from the rebuild" in text
    assert f"{TRAIN_LOG}: [3].loss differs from the rebuild" in text
    assert "[4]" not in text  # the clock reading alone is no difference
    assert f"evidence copy {copy}: tokenizer.json differs from the rebuild" in text
    assert f"{ARTIFACT_MANIFEST}: summary.steps differs from the rebuild" in text
    assert len(found) == 4, found
    assert "its stored build: 1 s): 4 difference(s)" in rebuild.summary()  # the claimed build time, shown (decide judges it)


def test_the_set_the_tests_read_is_compared_whatever_the_evidence_names(stored, tmp_path):
    """The evidence names an honest set under a foreign key; the set under this checkout's key, which
    the acceptance tests read, holds a moved weight: both are named."""
    store, built = _fresh_copy(stored, tmp_path)
    foreign = built.with_name("0123456789abcdef")
    shutil.copytree(built, foreign)
    ckpt = load_checkpoint(built / BEST_CHECKPOINT)
    name = min(ckpt.tensors)
    ckpt.tensors = {**ckpt.tensors, name: ckpt.tensors[name].clone().add_(1e-3)}
    save_checkpoint(ckpt, built / BEST_CHECKPOINT)
    found = Rebuild(REPO, store).problems({"model2": _entries(foreign)}, "smoke").problems["model2"]
    assert len(found) == 2, found
    assert f"model2/smoke/{built.name}: {BEST_CHECKPOINT} differs from the rebuild (first in tensor {name})" in found[0]
    assert f"the run judged model2/smoke/0123456789abcdef; this checkout builds key {built.name}" in found[1]


def test_a_resumed_build_agrees_with_an_uninterrupted_one(tmp_path, monkeypatch):
    """Killed mid-way and resumed from its last state, a build trains the same tensors: only its
    record of the resumption differs (training.loop.VARYING_FIELDS, the log's resume event)."""
    from shiptwo.builds import model2
    from shiptwo.builds.store import build

    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(tmp_path / "store"))
    train = model2.train

    def killed(*args, **kwargs):
        train(*args, stop_after=40, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(model2, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        build(model2.BUILDER, "smoke")
    monkeypatch.setattr(model2, "train", train)
    resumed = build(model2.BUILDER, "smoke")
    assert resumed.build_resumed and resumed.summary["resumed_at_steps"]
    rebuild = Rebuild(REPO, tmp_path / "store")
    assert rebuild.problems({"model2": _entries(resumed.root)}, "smoke").problems == {"model2": []}, rebuild.log


def test_rerun_and_rebuild_refuse_uncommitted_code(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "loop.py").write_text("SEED = 1\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], check=True)
    refuse_uncommitted_code(tmp_path, {"commit": "HEAD"}, "--rebuild")  # clean: nothing to refuse
    (tmp_path / "loop.py").write_text("SEED = 8\n")  # the defect: a trainer seeded otherwise, not committed
    with pytest.raises(ShiptwoError, match=r"--rebuild runs this checkout's code, but loop.py has uncommitted changes"):
        refuse_uncommitted_code(tmp_path, {"commit": "HEAD"}, "--rebuild")


def test_variable_records_compare_without_their_clock_fields_only(tmp_path):
    t = {"w": torch.arange(4, dtype=torch.float32)}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(safetensors_bytes(t, {"train_state": json.dumps({"step": 3, "elapsed": 1.5, "log": [{"loss": 1.0, "tokens_per_s": 9}]})}))
    b.write_bytes(safetensors_bytes(t, {"train_state": json.dumps({"step": 3, "elapsed": 2.5, "log": [{"loss": 1.0, "tokens_per_s": 4}]})}))
    assert file_difference(a, b, TRAIN_STATE) == ""
    assert file_difference(a, b, BEST_CHECKPOINT) == (  # not a variable record: every byte counts
        f"{BEST_CHECKPOINT} differs from the rebuild (first in metadata.train_state.elapsed)")
    b.write_bytes(safetensors_bytes(t, {"train_state": json.dumps({"step": 4, "elapsed": 1.5, "log": [{"loss": 1.0, "tokens_per_s": 9}]})}))
    assert "metadata.train_state.step differs" in file_difference(a, b, TRAIN_STATE)
    b.write_bytes(safetensors_bytes({"w": t["w"] + 1}, {"train_state": json.dumps({"step": 3})}))
    assert "tensor w differs" in file_difference(a, b, TRAIN_STATE)
    ra, rb = tmp_path / "ra.json", tmp_path / "rb.json"
    release = {"files": [{"path": "m.gguf", "sha256": "ab"}], "provenance": {"license": "Apache-2.0"}, "created": "t1", "git_commit": "c1"}
    ra.write_text(json.dumps(release))
    rb.write_text(json.dumps({**release, "created": "t2", "git_commit": "c2"}))
    assert file_difference(ra, rb, "release/manifest.json") == ""
    rb.write_text(json.dumps({**release, "provenance": {"license": "MIT"}}))
    assert "provenance.license differs" in file_difference(ra, rb, "release/manifest.json")
    rb.write_text("{not json")  # a malformed record: a difference, one line, no traceback
    assert "release/manifest.json differs from the rebuild and cannot be read as its format" in file_difference(
        ra, rb, "release/manifest.json")
    b.write_bytes(b"garbage")
    assert "cannot be read as its format" in file_difference(a, b, TRAIN_STATE)


def test_safetensors_bytes_do_not_depend_on_the_metadata_order():
    t = {"b": torch.ones(3), "a": torch.zeros(2, dtype=torch.float64)}
    one = safetensors_bytes(t, {"x": "1", "y": "2", "z": "3"})
    assert one == safetensors_bytes(dict(reversed(list(t.items()))), {"z": "3", "x": "1", "y": "2"})
    from safetensors.torch import load

    back = load(one)
    assert torch.equal(back["a"], t["a"]) and torch.equal(back["b"], t["b"])


def test_judged_sets_come_from_paths_and_copies_under_the_store(tmp_path):
    store = tmp_path / "store"
    inside = store / "model2" / "smoke" / "k1" / "best.safetensors"
    entries = [{"evidence": {"a": {"path": str(inside), "sha256": "x"},
                             "b": {"path": str(tmp_path / "ev" / "t.json"), "sha256": "y", "copied_from": str(inside.with_name("t.json"))},
                             "c": {"path": str(tmp_path / "elsewhere.txt"), "sha256": "z"}, "d": "prose"}}]
    assert judged_sets(entries, store) == {ArtifactSet("model2", "smoke", "k1"): {("t.json", tmp_path / "ev" / "t.json")}}


def test_rebuild_problems_refuse_every_counted_pass_of_the_model(tmp_path, capsys):
    project = Project(tmp_path)
    (tmp_path / "acceptance" / "test_r.py").write_text(TEST.replace("25.0", "4.0"))  # both criteria pass honestly
    project.run_acceptance()
    spec, results = load_spec(project.spec_path), load_results(project.results)
    bound = {"AC-R2-001": {"acceptance/test_r.py::test_latency"}, "AC-R2-002": {"acceptance/test_r.py::test_defects"}}
    [d] = decide(spec, results, allow_stale=True, bound=bound, rebuild=lambda entries, profile: RebuildOutcome({"model2": []}))
    assert d.verdict == RELEASE
    seen = {}

    def differs(entries, profile):
        seen.update(entries, profile=profile)
        return RebuildOutcome({"model2": ["--rebuild: model2/default/k: best.safetensors differs from the rebuild"]})

    [d] = decide(spec, results, allow_stale=True, bound=bound, rebuild=differs)
    assert d.verdict == REFUSED and {h.cid for h in d.refusals} == {"AC-R2-001", "AC-R2-002"}
    assert [e["id"] for e in seen["model2"]] == ["AC-R2-001", "AC-R2-002"] and seen["profile"] == "default"
    # through the CLI: this project's evidence names no stored artifact set, which --rebuild refuses
    assert project.gate("--rebuild") == EXIT_HOLD
    out = capsys.readouterr().out
    assert "--rebuild: rebuild of model2/default failed" in out  # this toy project builds nothing
    assert "rebuild of the artifacts: done (build time judged on it: AC-SHIP2-004)" in out  # what it judges, said
    assert project.gate("--rebuild", "--from-bundle", str(tmp_path)) == 2
    assert "--rebuild compares the store in the checkout" in capsys.readouterr().err
