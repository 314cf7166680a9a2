"""The compact pretraining loop: AdamW, warm-up + cosine, accumulation, DDP, and honest records.

Every condition that masked the truth in the original effort is refused or recorded here: a
Chinchilla gate before the first step (D/N < 10 refused unless forced), explicit device
resolution (no silent fallback), logged and recorded epoch wrap-arounds (no silent padding),
early stopping only after `min_steps` and a patience window, and a stop reason always recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from shiptwo import __version__
from shiptwo.model.checkpoint import checkpoint_from_model, save_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_text
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel

from shiptwo.training.config import TrainConfig, lr_at
from shiptwo.training.guards import CHINCHILLA_MIN_RATIO, chinchilla_gate, resolve_device, unique_training_tokens
from shiptwo.training.heap import reuse_freed_memory
from shiptwo.training.objective import TrainingLoss, autocast, evaluate_loss, windows
from shiptwo.training.sampler import WindowSampler
from shiptwo.training.steplog import StepLog, sync_interval
from shiptwo.training.state import TrainState, load_state, optimizer_state_sha256, save_state, unique_named_parameters

BEST_CHECKPOINT = "best.safetensors"
FINAL_CHECKPOINT = "final.safetensors"
TRAIN_LOG = "train_log.jsonl"
LOSS_CURVE = "loss_curve.png"
TRAIN_STATE = "state.safetensors"


log = logging.getLogger(__name__)

STOP_MAX_STEPS = "max_steps"
STOP_TOKEN_BUDGET = "token_budget"
STOP_WALL_CLOCK = "wall_clock"
STOP_EARLY = "early_stop"
# The only fields in which two runs of one recipe on one machine differ: readings of the wall clock;
# the steps a run was resumed at (a resumed run trains the same tensors; its log also holds a
# RESUME_EVENT per resumption); and the best checkpoint's loss on the whole validation split, an
# evaluation after training through torch's eager ops, whose BLAS picks its kernels at run time
# (measured 3.5571591 vs 3.5571601 for two builds of bit-identical tensors; training itself runs on
# kernels with a fixed order). The checkpoints' training record leaves them out, so a checkpoint's
# bytes depend only on what was trained (`shiptwo gate --rebuild` compares a rebuild byte for byte);
# the log, the run state and the build's summary keep them.
VARYING_FIELDS = frozenset({"tokens_per_s", "tokens_per_second", "wall_seconds", "elapsed", "resumed_at_steps",
                            "best_val_loss_full_split"})
RESUME_EVENT = "resume"  # the log entry's type


# --- the run ---------------------------------------------------------------------------------


@dataclass
class FineTune:
    """Training from existing weights (MODEL-1): start tensors, loss masks on targets, chat template.

    The Chinchilla gate guards pretraining from scratch; it is not applied to a fine-tune (and the
    summary says so).
    """

    init_tensors: dict[str, torch.Tensor]
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    chat_template: str | None = None


@dataclass
class TrainResult:
    summary: dict
    best_checkpoint: Path
    final_checkpoint: Path
    log_path: Path
    loss_curve: Path
    state_path: Path
    losses: list[float] = field(default_factory=list)
    optimizer_sha256: str = ""


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return _Dist(rank, dist.get_world_size())


def train(
    cfg: TrainConfig,
    model_config: ModelConfig,
    train_tokens: torch.Tensor,
    val_tokens: torch.Tensor,
    out_dir: str | Path,
    tokenizer_json: str,
    provenance: dict,
    resume: bool = False,
    code_version: str = __version__,
    stop_after: int | None = None,
    finetune: FineTune | None = None,
    observe: Callable[[LlamaModel, torch.optim.Optimizer, int], None] | None = None,
) -> TrainResult:
    """Train from scratch (or resume from out_dir/state.safetensors); write best/final checkpoints and logs.

    `stop_after` halts after that many steps as if interrupted (state saved, no checkpoints): for tests.
    `finetune` starts from given weights with masked losses instead of from a seeded init.
    `observe(model, optimizer, step)` is called after each optimizer step, before the gradients are
    cleared: an outside check can inspect every parameter, gradient and optimizer-state tensor.
    """
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dist_ = _init_distributed(device)
    if cfg.batch_size % dist_.world:
        raise ShiptwoError(f"train: batch_size {cfg.batch_size} is not divisible by world size {dist_.world}")
    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if model_config.max_position_embeddings < cfg.seq_len:
        raise ShiptwoError(f"train: seq_len {cfg.seq_len} exceeds max_position_embeddings {model_config.max_position_embeddings}")
    with _deterministic(prev_threads), reuse_freed_memory():
        return _run(_Run(cfg, model_config, train_tokens, val_tokens, out, tokenizer_json, provenance, resume,
                         code_version, stop_after, device, dist_, finetune, observe))


@contextlib.contextmanager
def _deterministic(prev_threads: int):
    """Deterministic algorithms for the run; the caller's settings (and thread count) restored after.
    Deterministic mode by default also fills every fresh tensor with NaN, a guard against reading
    memory never written: ~150 MB a step of fills here (~8 % of a CPU step, issue 14) that change no
    result. It is off for the run; the kernels' tests keep it on, so an output element a kernel
    forgets to write shows as NaN there."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill
        torch.set_num_threads(prev_threads)


@dataclass
class _Run:
    """Everything one training run is given, resolved (device, distributed ranks)."""

    cfg: TrainConfig
    model_config: ModelConfig
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    out: Path
    tokenizer_json: str
    provenance: dict
    resume: bool
    code_version: str
    stop_after: int | None
    device: torch.device
    dist: _Dist
    finetune: FineTune | None
    observe: Callable | None = None


def _run(run: _Run) -> TrainResult:
    cfg, model_config, train_tokens, val_tokens, out = run.cfg, run.model_config, run.train_tokens, run.val_tokens, run.out
    device, dist_, finetune, stop_after = run.device, run.dist, run.finetune, run.stop_after
    torch.manual_seed(cfg.seed)
    raw = LlamaModel(model_config)
    if finetune is None:
        raw.init_weights(cfg.seed)
    else:
        raw.load_tensors(finetune.init_tensors, source="fine-tune base")
    raw.to(device)
    n_params = raw.num_parameters()
    total = cfg.total_steps()
    if finetune is None:
        unique = unique_training_tokens(len(train_tokens), total * cfg.tokens_per_step)
        planned_ratio = chinchilla_gate(unique, n_params, cfg.force_under_provisioned)
    else:
        planned_ratio = total * cfg.tokens_per_step / n_params
        log.info("fine-tuning from existing weights: Chinchilla gate not applied (D/N of this stage %.3f)", planned_ratio)
    train_mask = finetune.train_mask if finetune else None
    val_mask = finetune.val_mask if finetune else None

    decay = [p for _, p in unique_named_parameters(raw) if p.dim() >= 2]
    no_decay = [p for _, p in unique_named_parameters(raw) if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True,  # one kernel for all parameters, deterministic
    )
    sampler = WindowSampler(len(train_tokens), cfg.seq_len, cfg.seed)
    st = TrainState()
    state_path = out / TRAIN_STATE
    if run.resume:
        load_state(state_path, raw, opt, sampler, st)
        st.log.append({"type": RESUME_EVENT, "step": st.step})
        log.warning("resuming from %s at step %d", state_path, st.step)
    model = raw
    if dist_.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None)
    objective = TrainingLoss(model, cfg.compile)

    per_rank = cfg.batch_size // dist_.world
    stop_reason = None
    t0 = time.perf_counter() - st.elapsed
    bar = tqdm(total=total, initial=st.step, disable=dist_.rank != 0 or not sys.stderr.isatty(),
               desc="train", unit="step", dynamic_ncols=True)
    log.info("training %d params for %d steps (%d tokens/step) on %s, D/N planned %.3f",
             n_params, total, cfg.tokens_per_step, device, planned_ratio)
    losses = [e["loss"] for e in st.log if e["type"] == "train"]
    steps = StepLog(cfg.tokens_per_step, sync_interval(device), st.log, losses, on_flush=partial(_progress, bar))
    raw.train()
    while st.step < total:
        step = st.step
        lr = lr_at(step, cfg, total)
        for g in opt.param_groups:
            g["lr"] = lr
        steps.start_step()
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            idx = sampler.take(cfg.batch_size, step)[dist_.rank * per_rank : (dist_.rank + 1) * per_rank]
            x, y = windows(train_tokens, idx, cfg.seq_len, device)
            m = windows(train_mask, idx, cfg.seq_len, device)[1] if train_mask is not None else None
            sync = micro == cfg.grad_accum - 1 or not dist_.active
            with (contextlib.nullcontext() if sync else model.no_sync()), autocast(device):
                loss = objective(x, y, m)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        opt.step()
        if run.observe is not None:
            run.observe(raw, opt, step + 1)
        opt.zero_grad(set_to_none=True)
        step_loss = loss_sum / cfg.grad_accum
        if dist_.active:
            import torch.distributed as dist

            dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
            step_loss /= dist_.world
        st.step = step + 1
        st.tokens += cfg.tokens_per_step
        steps.add(step_loss, {"type": "train", "step": st.step, "lr": lr, "tokens": st.tokens, "epoch": sampler.epoch})

        out_of_time = (cfg.max_wall_seconds is not None and time.perf_counter() - t0 > cfg.max_wall_seconds
                       and st.step < total)
        checkpoint = cfg.checkpoint_interval and st.step % cfg.checkpoint_interval == 0
        evaluate = st.step % cfg.eval_interval == 0 or st.step == total or out_of_time  # the last step always is
        if evaluate or checkpoint or (stop_after is not None and st.step >= stop_after):
            steps.flush()  # the log is read (or written) here: every step's loss in it
        if evaluate:
            val = evaluate_loss(raw, val_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_windows, val_mask)
            improved = val < st.best_val - cfg.min_delta
            if improved:
                st.best_val, st.best_step = val, st.step
                st.best_tensors = {k: v.detach().cpu().clone() for k, v in raw.state_dict_for_save().items()}
            st.val_history.append({"step": st.step, "val_loss": val})
            st.log.append({"type": "val", "step": st.step, "val_loss": val, "best": improved})
            if dist_.rank == 0:
                _write_log(out / TRAIN_LOG, st.log)
            evals_since = sum(1 for v in st.val_history if v["step"] > st.best_step)
            if st.step >= cfg.min_steps and evals_since >= cfg.patience and st.step < total:
                stop_reason = f"{STOP_EARLY}(patience={cfg.patience})"
        if out_of_time and stop_reason is None:
            stop_reason = f"{STOP_WALL_CLOCK}(limit={cfg.max_wall_seconds:g}s)"
        st.elapsed = time.perf_counter() - t0
        if checkpoint and dist_.rank == 0:
            save_state(state_path, raw, opt, sampler, st)
        if stop_reason:
            break
        if stop_after is not None and st.step >= stop_after and st.step < total:
            bar.close()
            if dist_.rank == 0:
                save_state(state_path, raw, opt, sampler, st)
            return _result(out, {}, losses, optimizer_state_sha256(raw, opt))
    bar.close()
    if stop_reason is None:
        stop_reason = STOP_MAX_STEPS if cfg.max_steps is not None else STOP_TOKEN_BUDGET
    wall = time.perf_counter() - t0
    log.info("stopped: %s after %d steps, %.1f s", stop_reason, st.step, wall)

    opt_sha = optimizer_state_sha256(raw, opt)
    summary = _summary(cfg, st, sampler, n_params, planned_ratio, stop_reason, wall, device, run.code_version,
                       dist_, opt_sha, total, len(train_tokens))
    summary["objective"] = "finetune" if finetune else "pretrain"
    summary["compile"] = objective.status  # "off", "inductor" or why it fell back to eager
    summary["chinchilla_gate"] = "applied" if finetune is None else "not applicable: fine-tune from existing weights"
    result = _result(out, summary, losses, opt_sha)
    if dist_.rank == 0:
        save_state(state_path, raw, opt, sampler, st)
        _finish(raw, st, summary, result, run.tokenizer_json, run.provenance, val_tokens, cfg, finetune)
    if dist_.active:
        import torch.distributed as dist

        dist.barrier()
    return result


def _progress(bar: tqdm, steps: int, loss: float, tok_s: float) -> None:
    bar.update(steps)
    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:.0f}")


def _result(out: Path, summary: dict, losses: list[float], opt_sha: str) -> TrainResult:
    return TrainResult(summary, out / BEST_CHECKPOINT, out / FINAL_CHECKPOINT, out / TRAIN_LOG,
                       out / LOSS_CURVE, out / TRAIN_STATE, losses, opt_sha)


def _summary(cfg, st, sampler, n_params, planned_ratio, stop_reason, wall, device, code_version, dist_, opt_sha, total,
             train_split_tokens) -> dict:
    unique = unique_training_tokens(train_split_tokens, st.tokens)
    return {
        "steps": st.step,
        "planned_steps": total,
        "tokens": st.tokens,  # tokens seen, repeats included
        "tokens_per_step": cfg.tokens_per_step,
        "parameters": n_params,
        "train_split_tokens": train_split_tokens,
        "unique_tokens": unique,
        "tokens_per_param": unique / n_params,  # Chinchilla's D/N: unique tokens
        "tokens_seen_per_param": st.tokens / n_params,
        "passes_over_data": st.tokens / train_split_tokens,
        "resumed_at_steps": [e["step"] for e in st.log if e["type"] == RESUME_EVENT],
        "planned_tokens_per_param": planned_ratio,
        "chinchilla_forced": bool(cfg.force_under_provisioned and planned_ratio < CHINCHILLA_MIN_RATIO),
        "best_val_loss": st.best_val,
        "best_step": st.best_step,
        "final_val_loss": st.val_history[-1]["val_loss"] if st.val_history else None,
        "val_history": st.val_history,
        "final_train_loss": next((e["loss"] for e in reversed(st.log) if e["type"] == "train"), None),
        "seed": cfg.seed,
        "device_requested": cfg.device,
        "device_resolved": device.type,
        "device_used": device.type,
        "world_size": dist_.world,
        "stop_reason": stop_reason,
        "min_steps": cfg.min_steps,
        "patience": cfg.patience,
        "epochs": sampler.epoch + 1,
        "wraps": sampler.wraps,
        "windows_per_epoch": sampler.n_windows,
        "windows_consumed": sampler.consumed,
        "wall_seconds": wall,
        "tokens_per_second": st.tokens / wall if wall > 0 else None,
        "optimizer_state_sha256": opt_sha,
        "code_version": code_version,
        "train_config": dataclasses.asdict(cfg),
    }


def _finish(raw, st, summary, result, tokenizer_json, provenance, val_tokens, cfg, finetune=None) -> None:
    """Write final and best checkpoints, the JSONL log and the loss curve."""
    from shiptwo.training.plots import plot_loss_curve

    device_used = next(raw.parameters()).device.type
    summary["device_used"] = device_used
    final_tensors = {k: v.detach().cpu().clone() for k, v in raw.state_dict_for_save().items()}
    best_tensors = st.best_tensors if st.best_tensors is not None else final_tensors
    cpu_model = LlamaModel(raw.config)
    cpu_model.load_tensors(best_tensors)
    # Periodic evals use `eval_windows` windows; the record also gets the best model on the whole split.
    summary["best_val_loss_full_split"] = evaluate_loss(cpu_model, val_tokens, cfg.seq_len, cfg.batch_size,
                                                        mask=finetune.val_mask if finetune else None)
    record = {k: v for k, v in summary.items() if k not in VARYING_FIELDS}
    for tensors, path in ((final_tensors, result.final_checkpoint), (best_tensors, result.best_checkpoint)):
        cpu_model.load_tensors(tensors)
        cpu_model.eval()
        ckpt = checkpoint_from_model(cpu_model, tokenizer_json, provenance, training=record,
                                     chat_template=finetune.chat_template if finetune else None)
        save_checkpoint(ckpt, path)
    _write_log(result.log_path, st.log)
    plot_loss_curve(st.log, result.loss_curve)


def _write_log(path: Path, entries: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


