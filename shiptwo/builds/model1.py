"""MODEL-1: instruction-tune a base LLaMA checkpoint into a chat model and package its release.

The base is MODEL-2's checkpoint of the same profile, or any LLaMA-architecture Hugging Face
directory (or native checkpoint) a user names in the recipe. The chat special tokens are added
to the base tokenizer (new embedding rows start at the mean embedding), the docstring → function
pairs are packed with a loss mask on the assistant's turn, and the same trainer as pretraining
runs from the base weights. The build then writes the release formats: an HF directory, a Q8_0
GGUF and a published and verified release directory.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from shiptwo.data.chat import CHAT_SPECIAL_TOKENS, CHAT_TEMPLATE, END_OF_TURN_TOKEN
from shiptwo.model.checkpoint import Checkpoint, load_checkpoint
from shiptwo.data.corpus import load_corpus
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_file
from shiptwo.data.instruct import mine_pairs, pack_pairs
from shiptwo.model.llama import ModelConfig
from shiptwo.builds.store import Builder, Fingerprint
from shiptwo.training.recipes import SFTRecipe
from shiptwo.model.tokenizer import BPETokenizer
from shiptwo.training.loop import FineTune, TrainResult, train

from shiptwo.builds.model2 import TOKENIZER_FILE
from shiptwo.formats.hf import HF_CONFIG_FILE, HF_WEIGHTS_FILE
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE
from shiptwo.paths import spec_path
from shiptwo.training.loop import BEST_CHECKPOINT, FINAL_CHECKPOINT, LOSS_CURVE, TRAIN_LOG, TRAIN_STATE

MODEL1_HF_DIR = "hf"  # MODEL-1's release formats, next to its checkpoint in the store
MODEL1_GGUF_Q8_0 = "model1-q8_0.gguf"
MODEL1_RELEASE_DIR = "release"


log = logging.getLogger(__name__)

BASE_MODEL2 = "model2"


def load_base(recipe: SFTRecipe) -> tuple[Checkpoint, dict]:
    """The base checkpoint and a record of where it came from (hashed into MODEL-1's key)."""
    if recipe.base == BASE_MODEL2:
        from shiptwo.builds import model2, store

        base = store.build(model2.BUILDER, recipe.profile)
        return load_checkpoint(base.checkpoint), {"base": BASE_MODEL2, "key": base.key,
                                                   "sha256": sha256_file(base.checkpoint)}
    path = Path(recipe.base)
    if not path.is_absolute() and not path.exists():
        path = recipe.path.parents[2] / path  # relative to the repository root holding spec/recipes/
    if path.is_dir():
        from shiptwo.formats.hf import read_hf

        weights = path / HF_WEIGHTS_FILE
        return read_hf(path), {"base": str(path), "sha256": sha256_file(weights) if weights.is_file() else None}
    if path.is_file():
        return load_checkpoint(path), {"base": str(path), "sha256": sha256_file(path)}
    raise ShiptwoError(f"{recipe.path}: profiles.{recipe.profile}.base {recipe.base!r}: no such directory or checkpoint")


def add_chat_tokens(ckpt: Checkpoint) -> tuple[BPETokenizer, ModelConfig, dict[str, torch.Tensor]]:
    """The base tokenizer plus the chat special tokens, and the config/tensors resized to match.

    New embedding (and untied output) rows start at the mean of the existing rows: a neutral
    start that keeps the first fine-tuning steps from being dominated by random new logits.
    """
    base_tok = ckpt.tokenizer()
    tok = base_tok.with_special_tokens(CHAT_SPECIAL_TOKENS)
    new_vocab = max(tok.vocab_size, ckpt.config.vocab_size)
    tensors = dict(ckpt.tensors)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in tensors and tensors[name].shape[0] < new_vocab:
            old = tensors[name]
            extra = old.mean(dim=0, keepdim=True).expand(new_vocab - old.shape[0], -1)
            tensors[name] = torch.cat([old, extra], dim=0).contiguous()
    config = dataclasses.replace(ckpt.config, vocab_size=new_vocab, eos_token_id=tok.token_to_id(END_OF_TURN_TOKEN))
    return tok, config, tensors


def finetune(recipe: SFTRecipe, out_dir: str | Path, code_version: str,
             base: tuple[Checkpoint, dict] | None = None) -> tuple[TrainResult, dict]:
    """Run the instruction tuning of `recipe` into out_dir; returns the train result and a data record.
    `base` is (checkpoint, record) when the caller already loaded it."""
    out = Path(out_dir)
    base, base_record = base or load_base(recipe)
    tok, config, tensors = add_chat_tokens(base)
    corpus = load_corpus(recipe.corpus)
    train_pairs = mine_pairs([(d.path, d.text) for d in corpus.splits["train"]], recipe.max_pairs, recipe.max_answer_chars)
    val_pairs = mine_pairs([(d.path, d.text) for d in corpus.splits["validation"]], recipe.validation_pairs, recipe.max_answer_chars)
    if not train_pairs or not val_pairs:
        raise ShiptwoError(f"{recipe.path}: profiles.{recipe.profile}.corpus yields {len(train_pairs)} train / "
                           f"{len(val_pairs)} validation instruction pairs; both must be non-empty")
    train_ids, train_mask = pack_pairs(tok, train_pairs)
    val_ids, val_mask = pack_pairs(tok, val_pairs)
    tok.save(out / TOKENIZER_FILE)
    provenance = {
        META_LICENSE: base.provenance[META_LICENSE],
        META_DATA_SOURCE: f"{base.provenance[META_DATA_SOURCE]}; instruction pairs mined from "
                            f"{corpus.data_source}",
        META_DATA_LICENSE: base.provenance[META_DATA_LICENSE],
    }
    data = {"base": base_record, "train_pairs": len(train_pairs), "validation_pairs": len(val_pairs),
            "train_tokens": len(train_ids), "train_supervised_tokens": int(train_mask.sum()),
            "validation_tokens": len(val_ids)}
    log.info("MODEL-1: %d train / %d validation pairs, %d tokens", len(train_pairs), len(val_pairs), len(train_ids))
    result = train(recipe.train, config, train_ids, val_ids, out, tok.to_json(), provenance,
                   code_version=code_version, finetune=FineTune(tensors, train_mask, val_mask, CHAT_TEMPLATE))
    return result, data


def package_release(checkpoint: Path, out_dir: Path) -> dict[str, str]:
    """HF directory, Q8_0 GGUF and a verified release directory next to the checkpoint; returns roles."""
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.hf import export_hf
    from shiptwo.formats.release import publish, verify

    ckpt = load_checkpoint(checkpoint)
    hf_dir = export_hf(ckpt, out_dir / MODEL1_HF_DIR)
    gguf = export_gguf(ckpt, out_dir / MODEL1_GGUF_Q8_0, "q8_0")
    manifest = publish([checkpoint, hf_dir, gguf], out_dir / MODEL1_RELEASE_DIR, spec_path=spec_path())
    problems = verify(manifest.parent)
    if problems:
        raise ShiptwoError(f"MODEL-1 release does not verify: {problems[0]}")
    rel = lambda p: Path(p).relative_to(out_dir).as_posix()  # noqa: E731
    return {"hf_config": rel(hf_dir / HF_CONFIG_FILE), "gguf_q8_0": rel(gguf), "release_manifest": rel(manifest)}


# --- the artifact-store builder for MODEL-1 ------------------------------------------------

def _model1_fingerprint(profile: str, options: dict):
    from shiptwo.training.recipes import load_sft_recipe

    recipe = load_sft_recipe(profile)
    if options.get("base"):
        recipe.base = str(Path(options["base"]).resolve())
    if options.get("device"):
        recipe.train = dataclasses.replace(recipe.train, device=options["device"])
    base = load_base(recipe)  # builds or reuses MODEL-2 when it is the base
    corpus = load_corpus(recipe.corpus)
    parts = {"recipe": recipe.to_dict(), "train": dataclasses.asdict(recipe.train), "base": base[1],
             "corpus": corpus.fingerprint()}
    return Fingerprint(parts, (recipe, base))


def _model1_run(profile: str, fp, workdir: Path) -> tuple[dict[str, str], dict, dict]:
    recipe, base = fp.context
    result, data = finetune(recipe, workdir, code_version=fp.parts["code"], base=base)
    roles = {
        "tokenizer": TOKENIZER_FILE, "checkpoint": BEST_CHECKPOINT, "final_checkpoint": FINAL_CHECKPOINT,
        "train_log": TRAIN_LOG, "loss_curve": LOSS_CURVE, "train_state": TRAIN_STATE,
    }
    roles.update(package_release(workdir / BEST_CHECKPOINT, workdir))
    return roles, {**recipe.to_dict(), "train": dataclasses.asdict(recipe.train)}, {**result.summary, "sft_data": data}


BUILDER = Builder("model1", _model1_fingerprint, _model1_run, entry=__name__)
