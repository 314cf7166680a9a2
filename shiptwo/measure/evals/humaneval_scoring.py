"""HumanEval scoring that a completion cannot game (issue 10): record, answer, replay.

1. Record, once per problem and scoring run: the check runs with the canonical solution behind a
   recording proxy (sandboxed; `random` seeded with the run's secret seed), which writes down the
   arguments of every call, in order.
2. Answer, per sample: the completion runs in the sandbox only to turn those arguments into
   outputs, written back as plain data. Nothing it can see decides its verdict: not the check,
   not an expected value, not a nonce; its exit status and anything it prints are ignored.
3. The parent loads the outputs with `plain_data.loads` (builtin types only, size and depth
   capped): an object with an overridden `__eq__` cannot come back.
4. Replay, per sample, in a separate sandbox: the original check runs against a `candidate` that
   returns those outputs in order; it passes only if the check returns having asked for exactly
   the recorded calls. A check that asks for something else (its calls depend on the outputs)
   is scored by the strict path: failed, with the reason, and counted in the result.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache

from shiptwo.errors import ShiptwoError
from shiptwo.measure import plain_data
from shiptwo.measure.evals import humaneval_calls
from shiptwo.measure.sandbox import (
    FS_PRIVATE_ROOT, OWN_UID, Isolation, SandboxConfig, SandboxRun, planned_isolation, planned_memory_bound,
    planned_time_policy, run_isolated,
)
from shiptwo.measure.sandbox_shipped import shipped_program

PASSED = "passed"
TIMED_OUT = "timed out"
FAILED = "failed: "
STRICT = "strict: "  # after FAILED, for samples the strict path scored
SCORING_METHOD = "record-replay"
# One sample's outputs, re-encoded, all together (HumanEval's largest are ~5 kB): each sample's are kept
# until its replay and copied into a replay batch, so megabytes a sample would exhaust the scorer's memory.
MAX_ANSWERS_BYTES = 1 << 18


@dataclass
class Verdict:
    passed: bool
    result: str  # "passed", "timed out (<which limit>)" or "failed: <reason>"
    strict: bool = False  # the replay diverged from the recording: scored failed by the strict path


@dataclass
class Judged:
    verdicts: list[Verdict]
    isolation: dict = field(default_factory=dict)  # what the sandbox could isolate on this machine

    @property
    def network(self) -> str:
        return self.isolation.get("network", "")

    @property
    def strict_scored(self) -> int:
        return sum(v.strict for v in self.verdicts)


@lru_cache(maxsize=None)
def _program(mode: str) -> str:
    return shipped_program([plain_data, humaneval_calls],
                           f"import shiptwo.measure.evals.humaneval_calls as _calls\n_calls.main({mode!r})")


def record_calls(problems: dict[str, dict], cfg: SandboxConfig | None = None, *, seed: int) -> dict[str, list[str]]:
    """Each problem's recorded calls (encoded argument lists, in order), `random` seeded with `seed`
    (the scoring run's secret). Not cached: recording all 164 takes about a second, and a recording
    kept across runs would keep its seed. A check that fails with its own canonical solution, or
    passes something that is not plain data, is an error naming the problem: it cannot be scored safely."""
    cfg = cfg or SandboxConfig()
    todo = list(problems.values())
    chunks = [c for c in (todo[i::cfg.workers] for i in range(cfg.workers)) if c]
    jobs = [(_program("record"), json.dumps({"seed": seed, "problems": [
        {"task_id": p["task_id"], "program": p["prompt"] + p["canonical_solution"], "test": p["test"],
         "entry_point": p["entry_point"]} for p in chunk]}).encode()) for chunk in chunks]
    runs = _run_parallel(jobs, [replace(cfg, timeout_s=cfg.timeout_s * len(c)) for c in chunks])
    recorded = {}
    for chunk, run in zip(chunks, runs):
        recorded.update(_read_recording(chunk, run))
    return {t: recorded[p["task_id"]] for t, p in problems.items()}


def _run_parallel(jobs: list[tuple[str, bytes]], cfgs: list[SandboxConfig]) -> list[SandboxRun]:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda jc: run_isolated(jc[0][0], jc[0][1], jc[1]), zip(jobs, cfgs)))


def _read_recording(chunk: list[dict], run: SandboxRun) -> dict[str, list[str]]:
    got = {}
    for line in run.stdout.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
            got[rec["task_id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue  # a problem without its line is reported below
    for p in chunk:
        rec = got.get(p["task_id"])
        if rec is None:
            raise ShiptwoError(f"humaneval {p['task_id']}: recording its check did not finish "
                               f"({run.failure() or 'no output'}; {run.stderr_tail.strip()[-200:]})")
        if rec["error"] is not None:
            raise ShiptwoError(f"humaneval {p['task_id']}: its check fails with the canonical solution while "
                               f"recording ({rec['error']}); it cannot be scored")
        if not rec["calls"]:
            raise ShiptwoError(f"humaneval {p['task_id']}: its check never calls the candidate")
    return {p["task_id"]: got[p["task_id"]]["calls"] for p in chunk}


def read_answers(run: SandboxRun, n_calls: int) -> tuple[list[dict] | None, str | None]:
    """The completion's outputs from an answer run, loaded and re-encoded canonically, or why
    there are none. Everything in `run` is the adversary's; only plain data gets through, at most
    MAX_ANSWERS_BYTES of it."""
    lines = run.stdout.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    try:
        header = json.loads(lines[0]) if lines else None
    except (ValueError, RecursionError):
        header = None
    if isinstance(header, dict) and isinstance(header.get("load_error"), str) and len(header) == 1:
        return None, FAILED + header["load_error"][:300]
    if header != {"loaded": True}:
        return None, _timed_out(run) if run.timed_out else FAILED + f"the completion did not load ({run.failure() or 'no output'})"
    if len(lines) - 1 > n_calls:
        return None, FAILED + f"the completion wrote {len(lines) - 1} outputs for {n_calls} calls"
    answers, kept = [], 0
    for i, line in enumerate(lines[1:]):
        answer = _answer(line)
        if answer is None:
            return None, FAILED + f"the output for call {i} is not plain data"
        kept += sum(len(v) for v in answer.values())
        if kept > MAX_ANSWERS_BYTES:
            return None, FAILED + f"the outputs up to call {i} total {kept} bytes, over the {MAX_ANSWERS_BYTES}-byte cap"
        answers.append(answer)
    if len(answers) < n_calls:
        if run.timed_out:
            return None, _timed_out(run)
        return None, FAILED + f"the completion stopped after {len(answers)} of {n_calls} calls ({run.failure() or 'exited'})"
    return answers, None


def _timed_out(run: SandboxRun) -> str:
    """TIMED_OUT, with the limit that stopped the run: its CPU time, or the wall cap (it slept or blocked)."""
    return TIMED_OUT + (f" ({run.stopped_by})" if run.stopped_by else "")


def _answer(line: bytes) -> dict | None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not all(isinstance(v, str) for v in rec.values()):
        return None
    if set(rec) == {"ok"}:
        try:
            return {"ok": plain_data.dumps(plain_data.loads(rec["ok"]))}
        except (plain_data.PlainDataError, ValueError, RecursionError):
            return None
    if set(rec) == {"raised", "message"} and rec["raised"].isidentifier():
        return {"raised": rec["raised"], "message": rec["message"][:200]}
    if set(rec) == {"unsupported"}:
        return {"unsupported": rec["unsupported"][:200]}
    return None


def replay_verdict(rec: dict | None, n_calls: int) -> Verdict:
    """The verdict of one replay (trusted code fed plain data; `rec` is its verdict line, None when
    it gave none): passed only if the check returned, made exactly the recorded calls and never
    asked for an unrecorded one."""
    try:
        error, made, diverged = rec["error"], rec["made"], rec["diverged_at"]
    except (KeyError, TypeError):
        return Verdict(False, FAILED + "the replay gave no verdict")
    if not (error is None or isinstance(error, str)) or type(made) is not int or not (diverged is None or type(diverged) is int):
        return Verdict(False, FAILED + "the replay's verdict is not well-formed")
    if diverged is not None or (error is None and made != n_calls):
        at = diverged if diverged is not None else made
        return Verdict(False, FAILED + STRICT + f"the check's calls depend on the completion's outputs "
                                               f"(replay left the recording at call {at} of {n_calls})", strict=True)
    if error is not None:
        return Verdict(False, FAILED + error[:300])
    return Verdict(True, PASSED)


def answer_calls(completion: str, problem: dict, calls: list[str], cfg: SandboxConfig) -> tuple[list[dict] | None, str | None, dict]:
    """Run the completion on the recorded calls in its own sandbox: (answers or None, why none, isolation).
    A completion whose processes together reached the memory bound fails, whatever it wrote."""
    job = {"program": problem["prompt"] + completion, "entry_point": problem["entry_point"], "calls": calls}
    run = run_isolated(_program("answer"), json.dumps(job).encode(), cfg)
    answers, failure = (None, FAILED + run.failure()) if run.memory_exceeded else read_answers(run, len(calls))
    return answers, failure, run.isolation.to_dict()


def replay(jobs: list[dict], cfg: SandboxConfig, seed: int) -> dict[int, dict]:
    """Replay jobs (each with an `index`) in one sandbox, each limited to cfg.timeout_s of CPU time, `random`
    seeded with the recording's `seed`; the verdict line of each that finished, by index."""
    payload = {"replays": jobs, "timeout_s": cfg.timeout_s, "seed": seed}
    run = run_isolated(_program("replay"), json.dumps(payload).encode(), replace(cfg, timeout_s=cfg.timeout_s * (len(jobs) + 1)))
    out = {}
    for line in run.stdout.splitlines():
        try:
            rec = json.loads(line)
            out[rec.pop("index")] = rec
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def _replay_job(index: int, problem: dict, calls: list[str], answers: list[dict]) -> dict:
    """The replay sees the same program as the recording (prompt + canonical solution: its helpers,
    and a prompt that compiles) with the entry point's name bound to the replaying candidate."""
    return {"index": index, "program": problem["prompt"] + problem["canonical_solution"], "test": problem["test"],
            "entry_point": problem["entry_point"], "calls": calls, "answers": answers}


def judge_samples(samples: Sequence[dict], problems: dict[str, dict], sandbox: SandboxConfig | None = None,
                  allow_weak_isolation: bool = False) -> Judged:
    """Verdicts for samples (task_id, completion), in order, and the isolation the runs had: each
    completion answers in a sandbox of its own; the replays run in `workers` batches, and any a
    batch did not finish runs again alone. Without a private root and a uid of its own a completion
    can read the solutions or tamper with later runs: refused unless `allow_weak_isolation`
    (then recorded in the isolation)."""
    cfg = sandbox or SandboxConfig()
    _check_isolation(planned_isolation(cfg), allow_weak_isolation)
    seed = secrets.randbits(63)  # this run's; only the trusted record and replay jobs see it
    needed = {s["task_id"]: problems[s["task_id"]] for s in samples}
    calls = record_calls(needed, cfg, seed=seed)
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        answered = list(pool.map(lambda s: answer_calls(s["completion"], problems[s["task_id"]], calls[s["task_id"]], cfg),
                                 samples))
        verdicts: list[Verdict | None] = [None if answers is not None else Verdict(False, failure)
                                          for answers, failure, _ in answered]
        jobs = [_replay_job(i, problems[s["task_id"]], calls[s["task_id"]], answered[i][0])
                for i, s in enumerate(samples) if verdicts[i] is None]
        n_batches = max(1, min(cfg.workers, len(jobs)))
        done = {}
        for part in pool.map(lambda b: replay(jobs[b::n_batches], cfg, seed), range(n_batches)):
            done.update(part)
        left = [j for j in jobs if j["index"] not in done]
        for part in pool.map(lambda j: replay([j], cfg, seed), left):
            done.update(part)
    for job in jobs:
        verdicts[job["index"]] = replay_verdict(done.get(job["index"]), len(job["calls"]))
    isolations = {json.dumps(iso, sort_keys=True) for _, _, iso in answered}
    if len(isolations) > 1:
        raise ShiptwoError(f"humaneval: sandbox isolation changed during the run: {sorted(isolations)}")
    isolation = json.loads(isolations.pop()) if isolations else {}
    if isolation:
        weak = _check_isolation(Isolation(**isolation), allow_weak_isolation)
        if weak:
            isolation["weak_isolation_allowed"] = weak
    # how a sample's memory was bounded (the admission fallback, logged, says why there was no cgroup), and its time
    return Judged(verdicts=verdicts, isolation={**isolation, "scoring": SCORING_METHOD,
                                                "memory_bound": planned_memory_bound(cfg).to_dict(),
                                                "time_limit": planned_time_policy(cfg).to_dict()})


def _check_isolation(iso: Isolation, allow_weak: bool) -> list[str]:
    """What `iso` lacks for scoring untrusted code (empty when nothing); an error when it lacks anything
    and weak isolation was not allowed."""
    missing = missing_isolation(iso)
    if missing and not allow_weak:
        raise ShiptwoError(f"humaneval: refusing to score: the sandbox here lacks {' and '.join(missing)}, so a completion "
                           "could pass falsely (needs root and a kernel allowing mount namespaces; allow_weak_isolation / "
                           "--allow-weak-isolation scores anyway, recorded in the results)")
    return missing


def missing_isolation(iso: Isolation) -> list[str]:
    """What `iso` lacks against a hostile program: a private root (else it reads the host's files, the
    problem set included) and its own uid (else processes it leaves run on as the caller, able to
    tamper with later runs, and nothing finds them to kill)."""
    return ([] if iso.filesystem == FS_PRIVATE_ROOT else ["a private root (filesystem isolation)"]) + \
           ([] if iso.user == OWN_UID else ["a uid of its own"])
