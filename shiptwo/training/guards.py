"""Refusals before the first training step: the device must be the one requested (no silent
fallback) and the unique training tokens must cover the parameters (the Chinchilla gate)."""

from __future__ import annotations

import logging

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.training.config import DEVICES

log = logging.getLogger(__name__)

CHINCHILLA_MIN_RATIO = 10.0  # refuse below this tokens-per-parameter unless forced (background, lesson 4)


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


def unique_training_tokens(train_split_tokens: int, tokens_seen: int) -> int:
    """Chinchilla's D: distinct training tokens the run sees. Looping the train split is not more
    data, so D is the split's size once the run passes over it more than once."""
    return min(int(train_split_tokens), int(tokens_seen))


def chinchilla_gate(tokens: int, params: int, force: bool) -> float:
    """D/N with D unique training tokens; below CHINCHILLA_MIN_RATIO a ShiptwoError unless forced (then a logged warning)."""
    ratio = tokens / params
    if ratio < CHINCHILLA_MIN_RATIO:
        msg = (f"train: under-provisioned run: D={tokens} unique training tokens / N={params} parameters = {ratio:.3f} "
               f"< {CHINCHILLA_MIN_RATIO:g} (Chinchilla-optimal is ~20; looping the data does not add to D)")
        if not force:
            raise ShiptwoError(msg + "; set force_under_provisioned (--force-under-provisioned) to run anyway")
        log.warning("%s; forced", msg)
    return ratio
