"""Acceptance metrics on a training run: wrap-arounds, early stop, device, reproducibility.

Each takes what it judges and its tolerances as arguments; none reads a threshold itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from shiptwo.model.llama import ModelConfig
from shiptwo.training.config import TrainConfig
from shiptwo.training.loop import STOP_EARLY, STOP_MAX_STEPS, STOP_TOKEN_BUDGET, STOP_WALL_CLOCK, train

REPRO_LOSS_TOLERANCE = 1e-6  # "identical" per the criterion: abs loss difference per step


def unreported_wraps(summary: dict) -> int:
    """AC-SHIP2-015: wraps implied by windows consumed vs windows per epoch, minus those recorded."""
    per_epoch, consumed = summary["windows_per_epoch"], summary["windows_consumed"]
    expected = max(0, (consumed - 1) // per_epoch) if consumed else 0
    recorded = len(summary.get("wraps", []))
    mismatch = abs(expected - recorded)
    if summary.get("epochs") != expected + 1 and consumed:
        mismatch += 1
    return mismatch


def early_stop_violations(summary: dict) -> int:
    """AC-SHIP2-017: 1 if no known stop reason is recorded, or an early stop fired before min_steps or patience."""
    reason = summary.get("stop_reason")
    if not reason:
        return 1
    if not reason.startswith(STOP_EARLY):
        return int(reason.split("(")[0] not in (STOP_MAX_STEPS, STOP_TOKEN_BUDGET, STOP_WALL_CLOCK))
    step, min_steps, patience = summary["steps"], summary["min_steps"], summary["patience"]
    evals_after_best = [v for v in summary.get("val_history", []) if v["step"] > summary["best_step"]]
    return int(step < min_steps or len(evals_after_best) < patience)


def device_mismatches(summary: dict) -> int:
    """AC-SHIP2-016: 0 if the device used is the one requested (auto: the one it resolved to, recorded), else 1."""
    req, resolved, used = summary.get("device_requested"), summary.get("device_resolved"), summary.get("device_used")
    if not (req and resolved and used):
        return 1
    if req != "auto" and resolved != req:
        return 1
    return int(used != resolved)


def reproducibility_violations(same_a: tuple[list[float], str], same_b: tuple[list[float], str],
                               other: tuple[list[float], str]) -> tuple[int, dict]:
    """Count violations over three runs' (losses, optimizer-state SHA-256): two with one seed, one with another.

    Same seed: any step whose loss differs by more than REPRO_LOSS_TOLERANCE, or different optimizer
    hashes, is a violation; different seed: identical losses or identical hashes are a violation.
    """
    (la, ha), (lb, hb), (lc, hc) = same_a, same_b, other
    same_diff = max((abs(x - y) for x, y in zip(la, lb)), default=math.inf) if len(la) == len(lb) else math.inf
    other_diff = max((abs(x - y) for x, y in zip(la, lc)), default=0.0)
    violations = int(not same_diff <= REPRO_LOSS_TOLERANCE) + int(ha != hb) + int(other_diff == 0.0) + int(ha == hc)
    return violations, {"steps": len(la), "max_abs_loss_diff_same_seed": same_diff,
                        "max_abs_loss_diff_other_seed": other_diff, "optimizer_sha256_same_seed": [ha, hb],
                        "optimizer_sha256_other_seed": hc}


def reproducibility_runs(cfg: TrainConfig, model_config: ModelConfig, train_tokens: torch.Tensor,
                         val_tokens: torch.Tensor, steps: int, workdir: str | Path, tokenizer_json: str,
                         provenance: dict) -> tuple[int, dict]:
    """Train `steps` steps three times (seed, seed, seed+1) with the real loop and compare."""
    runs = []
    for n, seed in enumerate((cfg.seed, cfg.seed, cfg.seed + 1)):
        c = dataclasses.replace(cfg, seed=seed, max_steps=steps, token_budget=None, eval_interval=steps,
                                force_under_provisioned=True, checkpoint_interval=None, max_wall_seconds=None)
        r = train(c, model_config, train_tokens, val_tokens, Path(workdir) / f"run{n}", tokenizer_json, provenance)
        runs.append((r.losses, r.optimizer_sha256))
    return reproducibility_violations(*runs)


def wraps_in_log(log_path: str | Path) -> int:
    """Epoch increments seen in the step log: an independent count of wrap-arounds (AC-SHIP2-015)."""
    epochs = [json.loads(line)["epoch"] for line in Path(log_path).read_text(encoding="utf-8").splitlines()
              if line and json.loads(line).get("type") == "train"]
    return epochs[-1] if epochs else 0  # epochs are numbered from 0: the last one is the wrap count
