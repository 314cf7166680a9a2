"""Acceptance metrics on a training run: wrap-arounds, early stop, device, reproducibility, Chinchilla.

Each takes what it judges and its tolerances as arguments; none reads a threshold itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.model.checkpoint import safetensors_metadata
from shiptwo.model.config import ModelConfig
from shiptwo.training.config import TrainConfig
from shiptwo.training.guards import unique_training_tokens
from shiptwo.training.loop import STOP_EARLY, STOP_MAX_STEPS, STOP_TOKEN_BUDGET, STOP_WALL_CLOCK, train
from shiptwo.training.sampler import window_count
from shiptwo.training.state import optimizer_state_sha256

TRAIN_STATE_META = "train_state"  # the metadata key training/state.save_state writes its counters under


def unreported_wraps(summary: dict, logged_wraps: int, logged_steps: int, train_split_tokens: int,
                     cfg: TrainConfig, optimizer_steps: int | None = None) -> tuple[int, dict]:
    """AC-SHIP2-015: wrap-arounds the run must have made, derived from outside the trainer's records,
    that its summary or its step log does not report.

    Windows per epoch come from the train split's length and the recipe's seq_len (the sampler's own
    count), windows consumed from the steps made x the recipe's batch_size x grad_accum; each wrap
    missing from (or extra in) the summary's wraps, the log's epoch count or the summary's epochs is one.
    The steps made are the more of the log's last step and the summary's `steps` (the trainer logs
    every step), and a log that disagrees with the summary is one more: a truncated or empty log
    would otherwise lower the wraps expected to none, and pass. `optimizer_steps` (the optimizer's
    own step counter, training_facts.optimizer_steps) joins that maximum, and a summary that
    disagrees with it is one more: a summary and a log rewritten together to fewer steps cannot hide
    a wrap. The evidence's `records_compared` names the records the count was taken over.
    """
    per_epoch = window_count(train_split_tokens, cfg.seq_len)
    if per_epoch < 1:
        raise ShiptwoError(f"train split of {train_split_tokens} tokens holds no window of seq_len+1 = {cfg.seq_len + 1}")
    recorded_steps = summary.get("steps")
    steps = max(logged_steps, recorded_steps if isinstance(recorded_steps, int) else 0, optimizer_steps or 0)
    consumed = steps * cfg.batch_size * cfg.grad_accum
    expected = (consumed - 1) // per_epoch if consumed else 0
    reported = len(summary.get("wraps", []))
    mismatch = (abs(expected - reported) + abs(expected - logged_wraps) + abs(expected + 1 - summary.get("epochs", 0))
                + int(logged_steps != recorded_steps))
    compared = ["summary wraps", "step log epochs", "summary epochs", "step log steps vs summary steps"]
    if optimizer_steps is not None:
        mismatch += int(optimizer_steps != recorded_steps)
        compared.append("optimizer step counter vs summary steps")
    return mismatch, {"records_compared": compared, "expected_wraps": expected, "windows_per_epoch": per_epoch,
                      "windows_consumed": consumed,
                      "train_split_tokens": train_split_tokens, "steps_in_log": logged_steps, "steps_in_summary": recorded_steps,
                      "steps_by_optimizer": optimizer_steps,
                      "wraps_in_summary": reported, "wraps_in_log": logged_wraps, "epochs_in_summary": summary.get("epochs"),
                      "summary_windows_per_epoch": summary.get("windows_per_epoch"),
                      "summary_windows_consumed": summary.get("windows_consumed")}


def early_stop_violations(summary: dict, cfg: TrainConfig, measured_seconds: float | None = None,
                          optimizer_steps: int | None = None) -> tuple[int, list[str], list[str]]:
    """AC-SHIP2-017: the recorded stop reason checked against the recipe's TrainConfig `cfg`.

    max_steps / token_budget: the recipe sets that limit and the run made its planned total of steps;
    wall_clock: the recipe sets a limit, the run stopped short of its total, and neither the trainer's
    wall_seconds nor `measured_seconds` (a clock outside the trainer; optional) is under the limit;
    early stop: short of the total, at or after the recipe's min_steps, with its patience of evals
    since the best. No reason, or an unknown one, is a violation. `optimizer_steps` (optional: the
    optimizer's own step counter, training_facts.optimizer_steps) is the step count judged, and a
    summary that records another is a violation: a run cut short and relabelled is seen by what its
    optimizer did, not by what its record says. Returns (count, problems, checked):
    `checked` names the conditions the count was taken over (each can add at most one problem).
    """
    reason, steps, total = summary.get("stop_reason"), summary.get("steps"), cfg.total_steps()
    checked = ["stop reason recorded"]
    if not reason:
        return 1, ["no stop reason recorded"], checked
    kind = reason.split("(")[0]
    problems = []
    if optimizer_steps is not None:
        checked.append("recorded steps = the optimizer's step counter")
        if steps != optimizer_steps:
            problems.append(f"the record says {steps} steps; the optimizer's step counter says {optimizer_steps}")
        steps = optimizer_steps
    if kind in (STOP_MAX_STEPS, STOP_TOKEN_BUDGET):
        checked += [f"recipe sets {kind}", "planned steps made"]
        limit = cfg.max_steps if kind == STOP_MAX_STEPS else cfg.token_budget
        if limit is None:
            problems.append(f"stop reason {kind} but the recipe sets no {kind}")
        if steps != total:
            problems.append(f"stop reason {kind} after {steps} steps; the recipe plans {total}")
    elif kind == STOP_WALL_CLOCK:
        limit = cfg.max_wall_seconds
        checked += ["recipe sets max_wall_seconds", "short of the planned steps"]
        if limit is None:
            problems.append("stop reason wall_clock but the recipe sets no max_wall_seconds")
        else:
            for what, seconds in (("trainer's wall_seconds", summary.get("wall_seconds")), ("measured", measured_seconds)):
                if what == "measured" and seconds is None:
                    continue
                checked.append(f"{what} at the limit")
                if seconds is None or seconds < limit:
                    problems.append(f"stop reason wall_clock but {what} {seconds} is under the limit {limit:g} s")
        if steps is None or steps >= total:
            problems.append(f"stop reason wall_clock after {steps} steps, not short of the planned {total}")
    elif kind == STOP_EARLY:
        checked += ["min_steps reached", "patience elapsed", "short of the planned steps"]
        after_best = [v for v in summary.get("val_history", []) if v["step"] > summary.get("best_step", math.inf)]
        if steps is None or steps < cfg.min_steps:
            problems.append(f"early stop at step {steps}, before the recipe's min_steps {cfg.min_steps}")
        if len(after_best) < cfg.patience:
            problems.append(f"early stop after {len(after_best)} evals without improvement; the recipe's patience is {cfg.patience}")
        if steps is None or steps >= total:
            problems.append(f"early stop after {steps} steps, not short of the planned {total}")
    else:
        checked.append("stop reason known")
        problems.append(f"unknown stop reason {reason!r}")
    return len(problems), problems, checked


def build_wall_seconds(artifacts, whole: bool = True) -> float | None:
    """AC-SHIP2-004: the artifact store's own clock around the whole build (data preparation and
    training), recorded in its manifest when built: not the trainer's figure about itself.

    A build that resumed an interrupted one timed only its last leg (store.build): that is no
    figure for the whole build, so it is a ShiptwoError, or None with `whole=False` (a caller for
    whom the store's clock is optional, AC-SHIP2-017), never a time that would pass for the whole.

    The manifest is the one file of a set its own hashes do not cover: its build_seconds edited
    down verified and passed. A whole build cannot take less than the training it holds, so a
    figure under the trainer's clock in the training state (`elapsed`, a file the manifest hashes)
    is a ShiptwoError. That catches an edit of the record alone, not one of both: only a timed
    rebuild is independent (`shiptwo gate --rebuild` judges this criterion on its own time too).
    """
    seconds = artifacts.build_seconds
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ShiptwoError(f"{artifacts.manifest}: build_seconds not recorded (rebuild the artifact with --rebuild)")
    if artifacts.build_resumed:
        if not whole:
            return None
        raise ShiptwoError(f"{artifacts.manifest}: the build resumed an interrupted one, so build_seconds ({seconds:.0f} s) "
                           "times only its last leg, not the whole build (rebuild it uninterrupted to measure)")
    state = artifacts.files["train_state"]  # a set without one: a ShiptwoError naming its manifest (store.RoleFiles)
    try:
        trained = float(json.loads(safetensors_metadata(state)[TRAIN_STATE_META])["elapsed"])
    except (KeyError, TypeError, ValueError):
        raise ShiptwoError(f"{state}: no trainer's clock (metadata {TRAIN_STATE_META}.elapsed) to hold build_seconds to") from None
    if seconds < trained:
        raise ShiptwoError(f"{artifacts.manifest}: build_seconds {seconds:.1f} s is less than the training it holds took by "
                           f"the trainer's clock ({trained:.1f} s, {state}): the store's record cannot be right")
    return float(seconds)


def device_census_violations(census: list[tuple[int, dict]], steps: int) -> int:
    """AC-SHIP2-016: tensors off the requested device over the observed steps, plus one for each of
    the `steps` live steps that was never observed (a census that inspected nothing proves nothing)."""
    return sum(n for n, _ in census) + abs(steps - len(census))


def expected_device(requested: str) -> torch.device:
    """The device a request must land on, resolved here rather than read from the trainer: `auto`
    means cuda when this process sees one, else cpu."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _on(t: torch.Tensor, expected: torch.device) -> bool:
    return t.device.type == expected.type and (expected.index is None or t.device.index == expected.index)


def tensor_device_census(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         expected: torch.device) -> tuple[int, dict]:
    """AC-SHIP2-016: tensors of a live training step that are not on `expected`, looked at directly.

    Every parameter, its gradient and every optimizer-state tensor is inspected. A parameter with
    no gradient or no optimizer state counts too (it was not observed, so it cannot be vouched
    for). 0-dim `step` counters are exempt: torch.optim keeps them on the CPU unless fused or
    capturable; they are counted apart in the evidence. The evidence's `checked` is what the count
    was taken over: tensors inspected plus gradients and optimizer states found missing.
    """
    wrong: list[str] = []
    unobserved = 0
    seen = {"parameters": 0, "gradients": 0, "optimizer_state": 0, "exempt_step_counters": 0}
    devices: dict[str, int] = {}

    def look(kind: str, name: str, t: torch.Tensor) -> None:
        seen[kind] += 1
        devices[str(t.device)] = devices.get(str(t.device), 0) + 1
        if not _on(t, expected):
            wrong.append(f"{kind[:-1] if kind.endswith('s') else kind} {name} on {t.device}")

    for name, p in model.named_parameters():
        look("parameters", name, p)
        if p.grad is None:
            unobserved += 1
            wrong.append(f"gradient {name} missing (not observed)")
        else:
            look("gradients", name, p.grad)
        state = optimizer.state.get(p, {})
        if not state:
            unobserved += 1
            wrong.append(f"optimizer state of {name} missing (not observed)")
        for key, t in state.items():
            if not isinstance(t, torch.Tensor):
                continue
            if key == "step" and t.dim() == 0:
                seen["exempt_step_counters"] += 1
                continue
            look("optimizer_state", f"{name}.{key}", t)
    checked = seen["parameters"] + seen["gradients"] + seen["optimizer_state"] + unobserved
    return len(wrong), {"expected_device": str(expected), "checked": checked, "inspected": seen, "devices": devices,
                        "not_on_expected_device": wrong[:20]}


def missing_device_refused(data_dir: str | Path, profile: str, out_dir: str | Path, device: str = "cuda",
                           timeout: float = 600) -> tuple[int, dict]:
    """AC-SHIP2-016 fault leg: `shiptwo train --device cuda` with no CUDA device visible must refuse
    (non-zero exit, an error naming the device, nothing written). Returns (1 if it did not refuse, evidence)."""
    out_dir = Path(out_dir)
    cmd = [sys.executable, "-m", "shiptwo", "train", "--profile", profile, "--data", str(data_dir),
           "--out", str(out_dir), "--device", device, "--max-steps", "2", "--force-under-provisioned"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hide any real GPU: the requested device is not there
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    written = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")) if out_dir.exists() else []
    refused = proc.returncode != 0 and device in proc.stderr and not written
    return int(not refused), {"command": " ".join(cmd[1:]), "exit_status": proc.returncode,
                              "stderr": proc.stderr.strip()[-500:], "files_written": written[:10]}


def token_prefix_data(data_dir: str | Path, out_dir: str | Path, n_tokens: int) -> Path:
    """A copy of a prepared data directory holding only the first `n_tokens` of each split (read
    without loading the rest): for checks that need a few live training steps, not the data."""
    import shutil

    from safetensors import safe_open

    from shiptwo.builds.model2 import CORPUS_MANIFEST, TOKENIZER_FILE, TOKENS_FILE
    from shiptwo.fileio import atomic_write_bytes
    from shiptwo.model.checkpoint import safetensors_bytes

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (TOKENIZER_FILE, CORPUS_MANIFEST):
        shutil.copy(data_dir / name, out_dir / name)
    with safe_open(str(data_dir / TOKENS_FILE), framework="pt") as fh:
        prefix = {k: fh.get_slice(k)[:n_tokens].contiguous() for k in fh.keys()}
    atomic_write_bytes(out_dir / TOKENS_FILE, safetensors_bytes(prefix))
    return out_dir


def chinchilla_figures(train_split_tokens: int, tokens_seen: int, parameters: int) -> dict:
    """AC-SHIP2-014: D/N with D the unique training tokens (the train split, at most what was seen),
    with the tokens seen and the passes over the data beside it: looping a corpus is not more data."""
    unique = unique_training_tokens(train_split_tokens, tokens_seen)
    return {"tokens_per_parameter": unique / parameters, "unique_training_tokens": unique,
            "train_split_tokens": train_split_tokens, "tokens_seen": tokens_seen, "parameters": parameters,
            "tokens_seen_per_parameter": tokens_seen / parameters, "passes_over_data": tokens_seen / train_split_tokens}


def reproducibility_violations(same_a: tuple[list[float], str], same_b: tuple[list[float], str],
                               other: tuple[list[float], str], loss_tol: float,
                               same_a_at_other: tuple[list[float], str] | None = None) -> tuple[int, dict]:
    """Count violations over three runs' (losses, optimizer-state SHA-256): two with one seed, one with another.

    Same seed: any step whose loss differs by more than `loss_tol`, or different optimizer
    hashes, is a violation; different seed: identical losses or identical hashes are a violation,
    compared with run A after as many steps as the other run made (`same_a_at_other`; default A itself).
    The evidence's `compared` names the comparisons the count was taken over (each at most one).
    """
    (la, ha), (lb, hb), (lc, hc) = same_a, same_b, other
    ref_losses, ref_hash = same_a_at_other or same_a
    same_diff = max((abs(x - y) for x, y in zip(la, lb)), default=math.inf) if len(la) == len(lb) else math.inf
    other_diff = max((abs(x - y) for x, y in zip(ref_losses, lc)), default=0.0)
    violations = int(not same_diff <= loss_tol) + int(ha != hb) + int(other_diff == 0.0) + int(ref_hash == hc)
    compared = ["same-seed losses", "same-seed optimizer state", "other-seed losses", "other-seed optimizer state"]
    return violations, {"compared": compared, "steps": len(la), "other_seed_steps": len(lc), "loss_tolerance": loss_tol,
                        "max_abs_loss_diff_same_seed": same_diff, "max_abs_loss_diff_other_seed": other_diff,
                        "optimizer_sha256_same_seed": [ha, hb], "optimizer_sha256_other_seed": [ref_hash, hc]}


def reproducibility_runs(cfg: TrainConfig, model_config: ModelConfig, train_tokens: torch.Tensor,
                         val_tokens: torch.Tensor, steps: int, workdir: str | Path, tokenizer_json: str,
                         provenance: dict, loss_tol: float, other_steps: int = 10) -> tuple[int, dict]:
    """Train the first `steps` steps of `cfg` twice with its seed, and `other_steps` with seed+1, with
    the real loop, and compare (the other seed against the first run's state after as many steps).

    The configuration is the recipe's own (its schedule over the full run included); the runs halt
    as an interrupted run would (`stop_after`), so no checkpoint is written.
    """
    steps = min(steps, cfg.total_steps())
    other_steps = min(other_steps, steps)
    at_other: dict[int, str] = {}

    def hash_at_other(model, opt, step):
        if step == other_steps:
            at_other[step] = optimizer_state_sha256(model, opt)

    runs = []
    for n, (seed, stop) in enumerate(((cfg.seed, steps), (cfg.seed, steps), (cfg.seed + 1, other_steps))):
        c = dataclasses.replace(cfg, seed=seed, checkpoint_interval=None)
        r = train(c, model_config, train_tokens, val_tokens, Path(workdir) / f"run{n}", tokenizer_json, provenance,
                  stop_after=stop, observe=hash_at_other if n == 0 else None)
        runs.append((r.losses[:stop], r.optimizer_sha256))
    if other_steps not in at_other:
        raise ShiptwoError(f"reproducibility: the first run's optimizer state was never hashed at step {other_steps}")
    a_at_other = (runs[0][0][:other_steps], at_other[other_steps])
    return reproducibility_violations(*runs, loss_tol=loss_tol, same_a_at_other=a_at_other)


def wraps_in_log(log_path: str | Path) -> tuple[int, int]:
    """(wraps, steps) seen in the step log: epoch increments and the last training step, counted apart
    from the trainer's summary (AC-SHIP2-015)."""
    train = [e for e in (json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line)
             if e.get("type") == "train"]
    return (train[-1]["epoch"], train[-1]["step"]) if train else (0, 0)  # epochs count from 0: the last is the wraps
