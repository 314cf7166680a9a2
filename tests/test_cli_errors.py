"""Bad input to the CLI: one line on stderr naming the file or option, exit 2, nothing written or
deleted (an output that is an input, a directory where a file goes, an unrelated directory)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.fileio import atomic_output_dir, atomic_write_text
from shiptwo.errors import ShiptwoError

GOLDEN = Path(__file__).resolve().parent / "golden"


def _one_line_exit_2(argv: list[str], capsys, names: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and names in err, err
    return err


@pytest.fixture
def golden_copy(tmp_path) -> Path:
    d = tmp_path / "golden"
    shutil.copytree(GOLDEN, d)
    return d


def test_output_equal_to_the_input_is_refused_and_the_input_kept(tiny_checkpoint, tmp_path, capsys):
    """`export ck -o ck` replaced the checkpoint with a GGUF and exited 0."""
    ck = tmp_path / "ck.safetensors"
    shutil.copy(tiny_checkpoint, ck)
    before = ck.read_bytes()
    _one_line_exit_2(["export", str(ck), "--format", "gguf", "-o", str(ck)], capsys, str(ck))
    _one_line_exit_2(["eval", "python-validity", str(ck), "--out", str(ck)], capsys, str(ck))
    _one_line_exit_2(["export", str(ck), "--format", "hf", "-o", str(tmp_path)], capsys, "input checkpoint")
    assert ck.read_bytes() == before


def test_report_onto_its_results_and_bundle_onto_its_inputs_are_refused(golden_copy, capsys):
    """`report -o results.json` overwrote the results; `gate --bundle DIR` deleted DIR's other files."""
    results, spec = golden_copy / "results.json", golden_copy / "spec.yaml"
    before = {p.name: p.read_bytes() for p in golden_copy.iterdir() if p.is_file()}
    common = ["--results", str(results), "--spec", str(spec)]
    _one_line_exit_2(["report", *common, "--format", "json", "-o", str(results)], capsys, "input results")
    _one_line_exit_2(["gate", *common, "--allow-stale", "--bundle", str(golden_copy)], capsys, "input results")
    assert {p.name: p.read_bytes() for p in golden_copy.iterdir() if p.is_file()} == before


def test_publish_into_or_onto_an_artifact_directory_is_refused(tiny_checkpoint, tmp_path, capsys):
    art = tmp_path / "art"
    art.mkdir()
    shutil.copy(tiny_checkpoint, art / "model.safetensors")
    for out in (art, art / "release"):
        _one_line_exit_2(["publish", str(art), "-o", str(out)], capsys, "input artifacts")
    assert sorted(p.name for p in art.iterdir()) == ["model.safetensors"]


def test_humaneval_out_refuses_to_rewrite_its_samples_input(tmp_path, capsys):
    """`eval humaneval --samples humaneval-samples.jsonl` (--out defaults to the working directory)
    rewrote its own input with the scored records and exited 0: its output files must not be inputs."""
    from shiptwo.measure.evals.humaneval import result_paths

    samples = tmp_path / result_paths(tmp_path)[1].name
    samples.write_text('{"task_id": "HumanEval/0", "completion": "    return False\\n"}\n')
    before = samples.read_bytes()
    for out in (tmp_path, samples):  # the directory holding it, and the file itself named as the directory
        _one_line_exit_2(["eval", "humaneval", "--samples", str(samples), "--limit", "1", "--out", str(out)], capsys,
                         "input samples")
    assert samples.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [samples.name]


def test_a_directory_where_a_file_goes_is_one_line(golden_copy, tmp_path, capsys):
    """`report -o DIR` wrote the whole report, then died in the rename with an IsADirectoryError traceback."""
    (tmp_path / "adir").mkdir()
    _one_line_exit_2(["report", "--results", str(golden_copy / "results.json"), "--spec", str(golden_copy / "spec.yaml"),
                      "-o", str(tmp_path / "adir")], capsys, "adir: cannot write a file there")
    with pytest.raises(ShiptwoError, match="a directory of that name exists"):
        atomic_write_text(tmp_path / "adir", "x")
    assert list((tmp_path / "adir").iterdir()) == [] and not list(tmp_path.glob(".adir*"))


def test_an_unrelated_directory_is_never_replaced_by_a_directory_output(tmp_path):
    """An output directory replaced only an empty one or an earlier output holding its marker file."""
    keep = tmp_path / "work"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ShiptwoError, match=r"work: directory exists and is not an earlier output \(no manifest.json\)"):
        with atomic_output_dir(keep, "manifest.json") as tmp:
            (tmp / "manifest.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["work"] and (keep / "notes.txt").read_text() == "mine"
    (keep / "manifest.json").write_text("{}")  # an earlier output of the same kind: replaced whole
    with atomic_output_dir(keep, "manifest.json") as tmp:
        (tmp / "manifest.json").write_text("[]")
    assert sorted(p.name for p in keep.iterdir()) == ["manifest.json"]


def test_train_refuses_a_step_count_below_one(tmp_path, capsys):
    """`train --max-steps 0` (or -5) wrote an untrained best.safetensors and exited 0."""
    for steps in ("0", "-5"):
        _one_line_exit_2(["train", "--profile", "smoke", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                          "--max-steps", steps], capsys, f"max_steps must be >= 1, got {steps}")
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("argv, names", [
    (["run", "{ck}", "--prompt", "def f", "--temperature", "1e-46"], "temperature must be 0 (greedy) or >= 1.18e-38"),
    (["run", "{ck}", "--prompt", "def f", "--temperature", "inf"], "temperature must be a finite number"),
    (["bench", "{ck}", "--threads", "100000", "--no-limits"], "bench: threads must be in 1.."),
    (["eval", "python-validity", "{ck}", "--profile", "smoke", "--n", "-4"], "--n must be >= 1, got -4"),
    (["eval", "python-validity", "{ck}", "--profile", "smoke", "--n", "0"], "--n must be >= 1, got 0"),
    (["eval", "loss", "{ck}", "--profile", "smoke", "--max-windows", "0"], "--max-windows must be >= 1, got 0"),
    (["eval", "humaneval", "{ck}", "--n-samples", "0", "--limit", "1"], "--n-samples must be >= 1, got 0"),
    (["eval", "humaneval", "--samples", "{ck}", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["qa", "{ck}", "--parity-tol", "-1"], "qa: --parity-tol must be a finite number >= 0, got -1.0"),
    (["qa", "{ck}", "--min-tok-s", "nan"], "qa: --min-tok-s must be a finite number >= 0, got nan"),
])
def test_numeric_options_out_of_range_are_one_line(tiny_checkpoint, tmp_path, capsys, argv, names):
    """Each was a traceback (NaN probabilities, a segfault after "can't start new thread"), an exit 0
    on a nonsense value (--n -4, --workers 0 run with one worker), a gate judged against a NaN or
    negative bound, or an error blaming something else (--max-windows 0: "too few tokens")."""
    argv = [a.replace("{ck}", str(tiny_checkpoint)) for a in argv]
    if argv[:2] in (["eval", "python-validity"], ["eval", "humaneval"]):
        argv += ["--out", str(tmp_path / "o")]
    _one_line_exit_2(argv, capsys, names)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, names", [
    (["--from-bundle", "B", "--bundle", "OUT"], "--bundle bundles a verdict reached in the checkout; it does not combine"),
    (["--rerun-timeout", "-1"], "gate: --rerun-timeout must be a finite number of seconds > 0, not -1.0"),
    (["--rebuild-timeout", "nan"], "gate: --rebuild-timeout must be a finite number of seconds > 0, not nan"),
])
def test_gate_options_that_cannot_hold_are_one_line(golden_copy, tmp_path, capsys, extra, names):
    """--bundle beside --from-bundle was silently not written (exit 1, no bundle); a timeout of -1
    or nan gave up every re-run at once, refusing each PASS for a "timeout"."""
    extra = [str(tmp_path / a) if a in ("B", "OUT") else a for a in extra]
    _one_line_exit_2(["gate", "--results", str(golden_copy / "results.json"), "--spec", str(golden_copy / "spec.yaml"),
                      "--allow-stale", *extra], capsys, names)
    assert not (tmp_path / "OUT").exists()


# Each reads a FIFO with no writer, which blocked open() forever: the CLI now refuses it by stat first.
FIFO_CASES = [
    (["report", "--results", "{fifo}", "--spec", "{golden}/spec.yaml", "-o", "-"], "input results"),
    (["report", "--results", "{golden}/results.json", "--spec", "{golden}/spec.yaml", "--baseline", "{link}",
      "-o", "-"], "input baseline"),  # a symbolic link to the FIFO: followed
    (["gate", "--results", "{golden}/results.json", "--spec", "{fifo}"], "input spec"),
    (["spec", "check", "{fifo}"], "input path"),
    (["export", "{fifo}", "--format", "gguf", "-o", "{tmp}/out.gguf"], "input checkpoint"),
    (["publish", "{golden}", "{fifo}", "-o", "{tmp}/release"], "input artifacts"),
    (["train", "--profile", "smoke", "--recipe", "{fifo}", "--data", "{tmp}/d", "--out", "{tmp}/o"], "input recipe"),
    (["eval", "humaneval", "--samples", "{fifo}", "--out", "{tmp}/he"], "input samples"),
    (["qa", "{fifo}"], "input artifact"),
]


def test_fifo_inputs_are_refused_not_waited_on(golden_copy, tmp_path):
    """One interpreter runs every case under a timeout, so a regression fails (naming the case) rather
    than hangs the suite; each case is one line naming the path, exit 2, nothing written."""
    import json
    import os
    import subprocess
    import sys

    from shiptwo.paths import project_root

    fifo, link = tmp_path / "in.fifo", tmp_path / "link.json"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    names = {"{fifo}": str(fifo), "{link}": str(link), "{golden}": str(golden_copy), "{tmp}": str(tmp_path)}
    argvs = [[_fill(a, names) for a in argv] for argv, _ in FIFO_CASES]
    driver = ("import contextlib, io, json, sys\nfrom shiptwo.cli import main\nfor argv in json.loads(sys.argv[1]):\n"
              "    err = io.StringIO()\n    with contextlib.redirect_stderr(err):\n        rc = main(argv)\n"
              "    print(json.dumps([rc, err.getvalue()]), flush=True)\n")
    try:
        proc = subprocess.run([sys.executable, "-c", driver, json.dumps(argvs)], cwd=project_root(), text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    except subprocess.TimeoutExpired as exc:
        done = (exc.stdout or b"").count(b"\n")
        pytest.fail(f"hung on a FIFO input: {' '.join(FIFO_CASES[done][0])}")
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(FIFO_CASES), proc.stderr[-2000:]
    for (argv, label), (rc, err) in zip(FIFO_CASES, results):
        path = str(link) if "{link}" in argv else str(fifo)
        assert rc == 2 and err.count("\n") == 1, (argv, err)
        assert f"{path}: {label} is a named pipe (FIFO), not a regular file or directory" in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden", "in.fifo", "link.json"]


def _fill(arg: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        arg = arg.replace(key, value)
    return arg


def test_every_read_option_is_an_option_of_its_command():
    """READS names options by their argparse dest: a misspelt one would be checked on no input at all."""
    import argparse

    from shiptwo.cli import READS, WRITES, build_parser

    def subparsers(parser) -> dict:
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    dests = {}
    for name, sub in subparsers(build_parser()).items():  # keyed as main() looks up: eval by its evaluation
        for child_name, child in (subparsers(sub) or {name: sub}).items():
            dests.setdefault(child_name if name == "eval" else name, set()).update(a.dest for a in child._actions)
    for command, options in {**READS, **{c: (o,) for c, o in WRITES.items()}}.items():
        assert set(options) <= dests[command], (command, set(options) - dests[command])
