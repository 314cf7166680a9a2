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

from shiptwo import constants as C
from shiptwo.chat import CHAT_SPECIAL_TOKENS, CHAT_TEMPLATE, END_OF_TURN_TOKEN
from shiptwo.checkpoint import Checkpoint, load_checkpoint
from shiptwo.corpus import load_corpus
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_file
from shiptwo.instruct import mine_pairs, pack_pairs
from shiptwo.model import ModelConfig
from shiptwo.recipes import SFTRecipe, project_file
from shiptwo.tokenizer import BPETokenizer
from shiptwo.train import FineTune, TrainResult, train

log = logging.getLogger(__name__)

BASE_MODEL2 = "model2"


def load_base(recipe: SFTRecipe) -> tuple[Checkpoint, dict]:
    """The base checkpoint and a record of where it came from (hashed into MODEL-1's key)."""
    if recipe.base == BASE_MODEL2:
        from shiptwo.store import build

        base = build(BASE_MODEL2, recipe.profile)
        return load_checkpoint(base.checkpoint), {"base": BASE_MODEL2, "key": base.key,
                                                   "sha256": sha256_file(base.checkpoint)}
    path = Path(recipe.base)
    if not path.is_absolute() and not path.exists():
        path = recipe.path.parents[2] / path  # relative to the repository root holding spec/recipes/
    if path.is_dir():
        from shiptwo.hf_io import read_hf

        weights = path / C.HF_WEIGHTS_FILE
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
    tok.save(out / C.TOKENIZER_FILE)
    provenance = {
        C.META_LICENSE: base.provenance[C.META_LICENSE],
        C.META_DATA_SOURCE: f"{base.provenance[C.META_DATA_SOURCE]}; instruction pairs mined from "
                            f"{corpus.data_source}",
        C.META_DATA_LICENSE: base.provenance[C.META_DATA_LICENSE],
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
    from shiptwo.gguf_export import export_gguf
    from shiptwo.hf_io import export_hf
    from shiptwo.release import publish, verify

    ckpt = load_checkpoint(checkpoint)
    hf_dir = export_hf(ckpt, out_dir / C.MODEL1_HF_DIR)
    gguf = export_gguf(ckpt, out_dir / C.MODEL1_GGUF_Q8_0, "q8_0")
    manifest = publish([checkpoint, hf_dir, gguf], out_dir / C.MODEL1_RELEASE_DIR, spec_path=project_file(C.SPEC_PATH, "spec"))
    problems = verify(manifest.parent)
    if problems:
        raise ShiptwoError(f"MODEL-1 release does not verify: {problems[0]}")
    rel = lambda p: Path(p).relative_to(out_dir).as_posix()  # noqa: E731
    return {"hf_config": rel(hf_dir / C.HF_CONFIG_FILE), "gguf_q8_0": rel(gguf), "release_manifest": rel(manifest)}


# --- the artifact-store builder for MODEL-1 ------------------------------------------------

MODEL1_MODULES = ("__init__", "chat", "checkpoint", "constants", "corpus", "errors", "fileio", "generate",
                  "gguf_export", "hf_io", "instruct", "model", "plots", "recipes", "release", "sft",
                  "tensor_names", "tokenizer", "train")


def _model1_fingerprint(profile: str, options: dict):
    from shiptwo.recipes import load_sft_recipe
    from shiptwo.store import Fingerprint

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
        "tokenizer": C.TOKENIZER_FILE, "checkpoint": C.BEST_CHECKPOINT, "final_checkpoint": C.FINAL_CHECKPOINT,
        "train_log": C.TRAIN_LOG, "loss_curve": C.LOSS_CURVE, "train_state": C.TRAIN_STATE,
    }
    roles.update(package_release(workdir / C.BEST_CHECKPOINT, workdir))
    return roles, {**recipe.to_dict(), "train": dataclasses.asdict(recipe.train)}, {**result.summary, "sft_data": data}


def _register() -> None:
    from shiptwo.store import Builder, register

    register("model1", Builder(_model1_fingerprint, _model1_run, MODEL1_MODULES))


_register()
