"""What a MODEL-2 build's data and optimizer state say about its training run, re-derived rather
than read from the trainer's records (AC-SHIP2-014, -015, -017).

The trainer's summary (in the checkpoint's metadata), its step log and the token file's header are
files the build wrote about itself: a run that stopped at step 40 of 80 relabelled `max_steps` after
80 steps, a log whose last line claims every train token was seen, or a token file whose train
split was padded, all verify against a store manifest rewritten to match. So the number of steps
comes from torch.optim's own step counter in the training state the final weights are bound to
(AC-SHIP2-005 compares them bit for bit), and the train split's length from the corpus re-tokenized
with the shipped tokenizer, which must equal the token file the trainer read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from shiptwo.data.corpus import Corpus
from shiptwo.errors import ShiptwoError
from shiptwo.model.tokenizer import BPETokenizer, encode_split

OPTIMIZER_STEP_SUFFIX = "/step"  # training/state.py saves each parameter's optimizer state as opt/<name>/<key>


def optimizer_steps(state: str | Path) -> int:
    """The optimizer updates the run made: every parameter's `step` counter in the training state
    (torch.optim's own count, which its bias correction used), all of which must agree."""
    from safetensors import SafetensorError, safe_open

    path = Path(state)
    try:
        with safe_open(str(path), framework="pt") as fh:
            counters = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("opt/") and k.endswith(OPTIMIZER_STEP_SUFFIX)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ShiptwoError(f"{path}: cannot read the training state ({str(exc).splitlines()[0]})") from None
    if not counters:
        raise ShiptwoError(f"{path}: no optimizer step counter (opt/<parameter>/step) in the training state")
    values = sorted({float(t.reshape(-1)[0]) if t.numel() == 1 else float("nan") for t in counters.values()})
    if len(values) != 1 or not values[0].is_integer() or values[0] < 0:
        raise ShiptwoError(f"{path}: the {len(counters)} parameters' optimizer step counters are not one count "
                           f"({', '.join(f'{v:g}' for v in values)})")
    return int(values[0])


def train_split_tokens(data_dir: str | Path, corpus: Corpus, tokenizer: str | Path) -> int:
    """Tokens in the corpus's train split encoded with the shipped tokenizer as the build encodes it,
    which must be the token file's train split token for token (what the trainer sampled from)."""
    from shiptwo.builds.model2 import TOKENS_FILE, load_tokens

    derived = encode_split(BPETokenizer.from_file(tokenizer), corpus.texts("train"))
    stored = load_tokens(data_dir)["train"]
    if stored.shape != derived.shape or not torch.equal(stored.to(derived.dtype), derived):
        raise ShiptwoError(f"{Path(data_dir) / TOKENS_FILE}: its train split ({len(stored)} tokens) is not the corpus's train "
                           f"split encoded with {tokenizer} ({len(derived)} tokens)")
    return len(derived)
