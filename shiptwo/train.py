"""The compact pretraining loop: AdamW, warm-up + cosine, accumulation, DDP, and honest records.

Every condition that masked the truth in the original effort is refused or recorded here: a
Chinchilla gate before the first step (D/N < 10 refused unless forced), explicit device
resolution (no silent fallback), logged and recorded epoch wrap-arounds (no silent padding),
early stopping only after `min_steps` and a patience window, and a stop reason always recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save
from tqdm import tqdm

from shiptwo import __version__
from shiptwo import constants as C
from shiptwo.checkpoint import checkpoint_from_model, save_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_bytes, atomic_write_text
from shiptwo.generate import SamplingConfig, generate_ids
from shiptwo.model import LlamaModel, ModelConfig

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CHINCHILLA_MIN_RATIO = 10.0  # refuse below this tokens-per-parameter unless forced (background, lesson 4)
STOP_MAX_STEPS = "max_steps"
STOP_TOKEN_BUDGET = "token_budget"
STOP_WALL_CLOCK = "wall_clock"
STOP_EARLY = "early_stop"
GOLDEN_MAX_NEW_TOKENS = 32


@dataclass
class TrainConfig:
    """Optimization and run-control hyper-parameters (one profile of a recipe)."""

    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_size: int = 8  # sequences per micro-step, global (split across DDP ranks)
    grad_accum: int = 1
    seq_len: int = 64
    max_steps: int | None = 20  # exactly one of max_steps / token_budget
    token_budget: int | None = None
    eval_interval: int = 10
    eval_windows: int = 16  # validation windows per periodic eval (the final eval uses the whole split)
    min_steps: int = 10  # early stopping never fires before this step
    patience: int = 3  # evals without improvement before an early stop
    min_delta: float = 0.0
    seed: int = 0
    force_under_provisioned: bool = False
    device: str = "auto"
    threads: int | None = None
    max_wall_seconds: float | None = None
    checkpoint_interval: int | None = None  # steps between resumable state saves (None: only at the end)

    def __post_init__(self):
        if (self.max_steps is None) == (self.token_budget is None):
            raise ShiptwoError("train: set exactly one of max_steps and token_budget")
        if self.device not in DEVICES:
            raise ShiptwoError(f"train: device {self.device!r} is not one of {', '.join(DEVICES)}")
        for name in ("batch_size", "grad_accum", "seq_len", "eval_interval", "eval_windows", "patience"):
            if int(getattr(self, name)) < 1:
                raise ShiptwoError(f"train: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def total_steps(self) -> int:
        if self.max_steps is not None:
            return int(self.max_steps)
        return max(1, int(self.token_budget) // self.tokens_per_step)

    @classmethod
    def from_dict(cls, d: dict, source: str = "train") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ShiptwoError(f"{source}: unknown train field(s) {', '.join(unknown)}")
        try:
            return cls(**d)
        except ShiptwoError as exc:
            raise ShiptwoError(f"{source}: {exc}") from None


# --- small pure pieces (each unit-tested) ----------------------------------------------------


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at `total` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def resolve_device(requested: str) -> torch.device:
    """auto → cuda if present else cpu (logged); cuda requested without one is an error, never a fallback."""
    if requested not in DEVICES:
        raise ShiptwoError(f"train: device {requested!r} is not one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ShiptwoError("train: device 'cuda' requested but torch.cuda.is_available() is False (no silent CPU fallback)")
    resolved = "cuda" if requested == "cuda" or (requested == "auto" and has_cuda) else "cpu"
    log.info("device requested %s, resolved %s", requested, resolved)
    return torch.device(resolved)


def chinchilla_gate(tokens: int, params: int, force: bool) -> float:
    """D/N; below CHINCHILLA_MIN_RATIO a ShiptwoError unless forced (then a logged warning)."""
    ratio = tokens / params
    if ratio < CHINCHILLA_MIN_RATIO:
        msg = (f"train: under-provisioned run: D={tokens} tokens / N={params} parameters = {ratio:.3f} "
               f"< {CHINCHILLA_MIN_RATIO:g} (Chinchilla-optimal is ~20)")
        if not force:
            raise ShiptwoError(msg + "; set force_under_provisioned (--force-under-provisioned) to run anyway")
        log.warning("%s; forced", msg)
    return ratio


class WindowSampler:
    """Sequential windows of seq_len+1 tokens, in a seeded shuffled order per epoch; wraps recorded."""

    def __init__(self, n_tokens: int, seq_len: int, seed: int):
        self.n_windows = (n_tokens - 1) // seq_len
        if self.n_windows < 1:
            raise ShiptwoError(f"train: train split has {n_tokens} tokens, fewer than seq_len+1 = {seq_len + 1}")
        self.seed, self.epoch, self.cursor = seed, 0, 0
        self.consumed = 0
        self.wraps: list[dict] = []
        self._perm = self._order(0)

    def _order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_windows, generator=gen)

    def take(self, k: int, step: int) -> list[int]:
        """The next k window indices; crossing the end of the data starts a new epoch, logged and recorded."""
        out = []
        for _ in range(k):
            if self.cursor == self.n_windows:
                self.epoch += 1
                self.cursor = 0
                self._perm = self._order(self.epoch)
                self.wraps.append({"step": step, "epoch": self.epoch, "windows_consumed": self.consumed})
                msg = f"corpus exhausted at step {step}: starting epoch {self.epoch} (pass {self.epoch + 1} over the data)"
                log.warning(msg)  # the CLI routes warnings to stderr; a library user's logging decides
            out.append(int(self._perm[self.cursor]))
            self.cursor += 1
            self.consumed += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "consumed": self.consumed, "wraps": list(self.wraps)}

    def restore(self, s: dict) -> None:
        self.epoch, self.cursor, self.consumed = s["epoch"], s["cursor"], s["consumed"]
        self.wraps = list(s["wraps"])
        self._perm = self._order(self.epoch)


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


def optimizer_state_sha256(model: torch.nn.Module, opt: torch.optim.Optimizer) -> str:
    """SHA-256 of every optimizer state tensor, walked in sorted parameter-name order."""
    h = hashlib.sha256()
    for name, p in _unique_named_parameters(model):
        for key, t in sorted(opt.state.get(p, {}).items()):
            t = torch.as_tensor(t).detach().cpu().contiguous()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def _unique_named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return sorted(model.named_parameters(), key=lambda kv: kv[0])  # named_parameters() already dedupes tied


def token_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy; with a `mask` (1 = supervised target) only those targets count."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    if mask is None:
        return ce.mean() if reduction == "mean" else ce.sum()
    m = mask.reshape(-1).to(ce.dtype)
    total = (ce * m).sum()
    return total / m.sum().clamp(min=1) if reduction == "mean" else total


@torch.no_grad()
def evaluate_loss(model: LlamaModel, tokens: torch.Tensor, seq_len: int, batch: int, max_windows: int | None = None,
                  mask: torch.Tensor | None = None) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of `tokens` (1-D int tensor),
    counting only targets where `mask` is 1 when a mask is given (fine-tuning: the assistant's turn)."""
    n = (len(tokens) - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ShiptwoError(f"eval: {len(tokens)} tokens are fewer than seq_len+1 = {seq_len + 1}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, n, batch):
        idx = range(start, min(n, start + batch))
        x, y = _windows(tokens, list(idx), seq_len, device)
        m = _windows(mask, list(idx), seq_len, device)[1] if mask is not None else None
        with _autocast(device):
            logits = model(x)
        total += token_loss(logits, y, m, reduction="sum").item()
        count += y.numel() if m is None else int(m.sum())
    model.train(was_training)
    return total / count


def _windows(tokens: torch.Tensor, idx: list[int], seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in idx]).long()
    rows = rows.to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
) -> TrainResult:
    """Train from scratch (or resume from out_dir/state.safetensors); write best/final checkpoints and logs.

    `stop_after` halts after that many steps as if interrupted (state saved, no checkpoints): for tests.
    `finetune` starts from given weights with masked losses instead of from a seeded init.
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
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run(cfg, model_config, train_tokens, val_tokens, out, tokenizer_json, provenance, resume,
                    code_version, stop_after, device, dist_, finetune)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def _run(cfg, model_config, train_tokens, val_tokens, out, tokenizer_json, provenance, resume,
         code_version, stop_after, device, dist_, finetune=None) -> TrainResult:
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
        planned_ratio = chinchilla_gate(total * cfg.tokens_per_step, n_params, cfg.force_under_provisioned)
    else:
        planned_ratio = total * cfg.tokens_per_step / n_params
        log.info("fine-tuning from existing weights: Chinchilla gate not applied (D/N of this stage %.3f)", planned_ratio)
    train_mask = finetune.train_mask if finetune else None
    val_mask = finetune.val_mask if finetune else None

    decay = [p for _, p in _unique_named_parameters(raw) if p.dim() >= 2]
    no_decay = [p for _, p in _unique_named_parameters(raw) if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False,
    )
    sampler = WindowSampler(len(train_tokens), cfg.seq_len, cfg.seed)
    st = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val": math.inf, "best_step": 0,
          "val_history": [], "log": [], "best_tensors": None}
    state_path = out / C.TRAIN_STATE
    if resume:
        _load_state(state_path, raw, opt, sampler, st)
    model = raw
    if dist_.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None)

    per_rank = cfg.batch_size // dist_.world
    stop_reason = None
    t0 = time.perf_counter() - st["elapsed"]
    bar = tqdm(total=total, initial=st["step"], disable=dist_.rank != 0 or not sys.stderr.isatty(),
               desc="train", unit="step", dynamic_ncols=True)
    log.info("training %d params for %d steps (%d tokens/step) on %s, D/N planned %.3f",
             n_params, total, cfg.tokens_per_step, device, planned_ratio)
    losses = [e["loss"] for e in st["log"] if e["type"] == "train"]
    raw.train()
    while st["step"] < total:
        step = st["step"]
        lr = lr_at(step, cfg, total)
        for g in opt.param_groups:
            g["lr"] = lr
        step_t = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            idx = sampler.take(cfg.batch_size, step)[dist_.rank * per_rank : (dist_.rank + 1) * per_rank]
            x, y = _windows(train_tokens, idx, cfg.seq_len, device)
            m = _windows(train_mask, idx, cfg.seq_len, device)[1] if train_mask is not None else None
            sync = micro == cfg.grad_accum - 1 or not dist_.active
            with (contextlib.nullcontext() if sync else model.no_sync()), _autocast(device):
                logits = model(x)
                loss = token_loss(logits, y, m)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_loss = loss_sum / cfg.grad_accum
        if dist_.active:
            import torch.distributed as dist

            dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
            step_loss /= dist_.world
        loss_v = float(step_loss)
        if not math.isfinite(loss_v):
            raise ShiptwoError(f"train: loss became {loss_v} at step {step} (lr {lr:.3g}); lower lr or check data")
        st["step"] = step + 1
        st["tokens"] += cfg.tokens_per_step
        dt = time.perf_counter() - step_t
        losses.append(loss_v)
        st["log"].append({"type": "train", "step": st["step"], "loss": loss_v, "lr": lr, "tokens": st["tokens"],
                          "tokens_per_s": cfg.tokens_per_step / dt if dt > 0 else None, "epoch": sampler.epoch})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.3f}", tok_s=f"{cfg.tokens_per_step / max(dt, 1e-9):.0f}")

        out_of_time = (cfg.max_wall_seconds is not None and time.perf_counter() - t0 > cfg.max_wall_seconds
                       and st["step"] < total)
        if st["step"] % cfg.eval_interval == 0 or st["step"] == total or out_of_time:  # the last step is always evaluated
            val = evaluate_loss(raw, val_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_windows, val_mask)
            improved = val < st["best_val"] - cfg.min_delta
            if improved:
                st["best_val"], st["best_step"] = val, st["step"]
                st["best_tensors"] = {k: v.detach().cpu().clone() for k, v in raw.state_dict_for_save().items()}
            st["val_history"].append({"step": st["step"], "val_loss": val})
            st["log"].append({"type": "val", "step": st["step"], "val_loss": val, "best": improved})
            if dist_.rank == 0:
                _write_log(out / C.TRAIN_LOG, st["log"])
            evals_since = sum(1 for v in st["val_history"] if v["step"] > st["best_step"])
            if st["step"] >= cfg.min_steps and evals_since >= cfg.patience and st["step"] < total:
                stop_reason = f"{STOP_EARLY}(patience={cfg.patience})"
        if out_of_time and stop_reason is None:
            stop_reason = f"{STOP_WALL_CLOCK}(limit={cfg.max_wall_seconds:g}s)"
        st["elapsed"] = time.perf_counter() - t0
        if cfg.checkpoint_interval and st["step"] % cfg.checkpoint_interval == 0 and dist_.rank == 0:
            _save_state(state_path, raw, opt, sampler, st)
        if stop_reason:
            break
        if stop_after is not None and st["step"] >= stop_after and st["step"] < total:
            bar.close()
            if dist_.rank == 0:
                _save_state(state_path, raw, opt, sampler, st)
            return _result(out, {}, losses, optimizer_state_sha256(raw, opt))
    bar.close()
    if stop_reason is None:
        stop_reason = STOP_MAX_STEPS if cfg.max_steps is not None else STOP_TOKEN_BUDGET
    wall = time.perf_counter() - t0
    log.info("stopped: %s after %d steps, %.1f s", stop_reason, st["step"], wall)

    opt_sha = optimizer_state_sha256(raw, opt)
    summary = _summary(cfg, st, sampler, n_params, planned_ratio, stop_reason, wall, device, code_version,
                       dist_, opt_sha, total)
    summary["objective"] = "finetune" if finetune else "pretrain"
    summary["chinchilla_gate"] = "applied" if finetune is None else "not applicable: fine-tune from existing weights"
    result = _result(out, summary, losses, opt_sha)
    if dist_.rank == 0:
        _save_state(state_path, raw, opt, sampler, st)
        _finish(raw, st, summary, result, tokenizer_json, provenance, val_tokens, cfg, finetune)
    if dist_.active:
        import torch.distributed as dist

        dist.barrier()
    return result


def _result(out: Path, summary: dict, losses: list[float], opt_sha: str) -> TrainResult:
    return TrainResult(summary, out / C.BEST_CHECKPOINT, out / C.FINAL_CHECKPOINT, out / C.TRAIN_LOG,
                       out / C.LOSS_CURVE, out / C.TRAIN_STATE, losses, opt_sha)


def _summary(cfg, st, sampler, n_params, planned_ratio, stop_reason, wall, device, code_version, dist_, opt_sha, total) -> dict:
    return {
        "steps": st["step"],
        "planned_steps": total,
        "tokens": st["tokens"],
        "tokens_per_step": cfg.tokens_per_step,
        "parameters": n_params,
        "tokens_per_param": st["tokens"] / n_params,
        "planned_tokens_per_param": planned_ratio,
        "chinchilla_forced": bool(cfg.force_under_provisioned and planned_ratio < CHINCHILLA_MIN_RATIO),
        "best_val_loss": st["best_val"],
        "best_step": st["best_step"],
        "final_val_loss": st["val_history"][-1]["val_loss"] if st["val_history"] else None,
        "val_history": st["val_history"],
        "final_train_loss": next((e["loss"] for e in reversed(st["log"]) if e["type"] == "train"), None),
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
        "tokens_per_second": st["tokens"] / wall if wall > 0 else None,
        "optimizer_state_sha256": opt_sha,
        "code_version": code_version,
        "train_config": dataclasses.asdict(cfg),
    }


def _finish(raw, st, summary, result, tokenizer_json, provenance, val_tokens, cfg, finetune=None) -> None:
    """Write final and best checkpoints (with golden outputs), the JSONL log and the loss curve."""
    from shiptwo.plots import plot_loss_curve
    from shiptwo.tokenizer import BPETokenizer

    tok = BPETokenizer.from_json(tokenizer_json)
    device_used = next(raw.parameters()).device.type
    summary["device_used"] = device_used
    final_tensors = {k: v.detach().cpu().clone() for k, v in raw.state_dict_for_save().items()}
    best_tensors = st["best_tensors"] if st["best_tensors"] is not None else final_tensors
    cpu_model = LlamaModel(raw.config)
    cpu_model.load_tensors(best_tensors)
    # Periodic evals use `eval_windows` windows; the record also gets the best model on the whole split.
    summary["best_val_loss_full_split"] = evaluate_loss(cpu_model, val_tokens, cfg.seq_len, cfg.batch_size,
                                                        mask=finetune.val_mask if finetune else None)
    for tensors, path in ((final_tensors, result.final_checkpoint), (best_tensors, result.best_checkpoint)):
        cpu_model.load_tensors(tensors)
        cpu_model.eval()
        golden = golden_outputs(cpu_model, tok)
        ckpt = checkpoint_from_model(cpu_model, tokenizer_json, provenance, training=summary, golden=golden,
                                     chat_template=finetune.chat_template if finetune else None)
        save_checkpoint(ckpt, path)
    _write_log(result.log_path, st["log"])
    plot_loss_curve(st["log"], result.loss_curve)


def golden_outputs(model: LlamaModel, tokenizer) -> dict:
    """Greedy continuations of the canary prompts: QA later checks the shipped model still produces them."""
    cfg = SamplingConfig(max_new_tokens=GOLDEN_MAX_NEW_TOKENS)
    prompts, ids, texts = [], [], []
    for prompt in C.CANARY_PROMPTS:
        p = tokenizer.encode(prompt)
        out = generate_ids(model, p, cfg)
        prompts.append(p)
        ids.append(out)
        texts.append(tokenizer.decode(out))
    return {"prompts": list(C.CANARY_PROMPTS), "prompt_ids": prompts, "output_ids": ids, "output_texts": texts,
            "sampling": dataclasses.asdict(cfg)}


def _write_log(path: Path, entries: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


# --- resumable state: safetensors tensors + JSON metadata, no pickle ------------------------


def _save_state(path: Path, raw: LlamaModel, opt, sampler: WindowSampler, st: dict) -> None:
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in raw.state_dict_for_save().items()}
    if st["best_tensors"] is not None:
        tensors.update({f"best/{k}": v.contiguous() for k, v in st["best_tensors"].items()})
    for name, p in _unique_named_parameters(raw):
        for key, t in opt.state.get(p, {}).items():
            tensors[f"opt/{name}/{key}"] = torch.as_tensor(t).detach().cpu().contiguous()
    meta = {k: st[k] for k in ("step", "tokens", "elapsed", "best_val", "best_step", "val_history", "log")}
    meta["best_val"] = None if math.isinf(meta["best_val"]) else meta["best_val"]
    meta["sampler"] = sampler.state()
    atomic_write_bytes(path, st_save(tensors, metadata={"train_state": json.dumps(meta)}))


def _load_state(path: Path, raw: LlamaModel, opt, sampler: WindowSampler, st: dict) -> None:
    from shiptwo.checkpoint import read_safetensors_metadata

    if not path.exists():
        raise ShiptwoError(f"{path}: no training state to resume from")
    meta = json.loads(read_safetensors_metadata(path.read_bytes(), path)["train_state"])
    tensors = st_load_file(str(path))
    device = next(raw.parameters()).device
    raw.load_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, source=str(path))
    raw.to(device)
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    st["best_tensors"] = best or None
    for name, p in _unique_named_parameters(raw):
        keys = {k.rsplit("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt/{name}/")}
        if keys:
            opt.state[p] = {k: (v if k == "step" else v.to(device)) for k, v in keys.items()}
    st.update({k: meta[k] for k in ("step", "tokens", "elapsed", "best_step", "val_history", "log")})
    st["best_val"] = math.inf if meta["best_val"] is None else meta["best_val"]
    sampler.restore(meta["sampler"])


# --- reproducibility (AC-SHIP2-011) ----------------------------------------------------------

REPRO_LOSS_TOLERANCE = 1e-6  # "identical" per the criterion: abs loss difference per step


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
