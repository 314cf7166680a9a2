"""The MODEL-2 pipeline: corpus → tokenizer → token splits → training, each step writing its files.

`prepare_data` and `train_recipe` are separate so `shiptwo train` (and torchrun) can train from a
prepared data directory; the builder at the end chains them for the artifact store (`shiptwo build`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file as st_load_file

from shiptwo.data.corpus import SPLITS, Corpus, load_corpus
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_bytes, atomic_write_json
from shiptwo.builds.store import Builder, Fingerprint
from shiptwo.training.recipes import Recipe
from shiptwo.model.tokenizer import BPETokenizer, encode_split, train_tokenizer
from shiptwo.training.loop import TrainResult, train

from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE, safetensors_bytes
from shiptwo.training.loop import BEST_CHECKPOINT, FINAL_CHECKPOINT, LOSS_CURVE, TRAIN_LOG, TRAIN_STATE

CORPUS_MANIFEST = "corpus_manifest.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENS_FILE = "tokens.safetensors"  # the tokenized splits, one int32 tensor per split


WEIGHTS_LICENSE = "Apache-2.0"
# role -> file of a MODEL-2 set: every build holds all of them
ROLES = {"tokenizer": TOKENIZER_FILE, "tokens": TOKENS_FILE, "corpus_manifest": CORPUS_MANIFEST,
         "checkpoint": BEST_CHECKPOINT, "final_checkpoint": FINAL_CHECKPOINT, "train_log": TRAIN_LOG,
         "loss_curve": LOSS_CURVE, "train_state": TRAIN_STATE}


def prepare_data(recipe: Recipe, out_dir: str | Path, corpus: Corpus | None = None) -> dict[str, Path]:
    """Write tokenizer.json, tokens.safetensors and corpus_manifest.json for `recipe` under out_dir."""
    out = Path(out_dir)
    corpus = corpus or load_corpus(recipe.corpus)
    tok = train_tokenizer(corpus.texts("train"), recipe.vocab_size)
    if tok.vocab_size != recipe.vocab_size:
        raise ShiptwoError(
            f"{recipe.path}: profiles.{recipe.profile}.tokenizer.vocab_size {recipe.vocab_size}: the train split "
            f"only supports {tok.vocab_size} tokens; lower vocab_size or enlarge the corpus"
        )
    if tok.eot_id != recipe.model.eos_token_id:
        raise ShiptwoError(f"{recipe.path}: model.eos_token_id {recipe.model.eos_token_id} != tokenizer EOT id {tok.eot_id}")
    tokens = {s: encode_split(tok, corpus.texts(s)) for s in SPLITS}
    paths = {
        "tokenizer": tok.save(out / TOKENIZER_FILE),
        "tokens": atomic_write_bytes(out / TOKENS_FILE, safetensors_bytes(tokens)),
        "corpus_manifest": atomic_write_json(out / CORPUS_MANIFEST, corpus.manifest({s: len(t) for s, t in tokens.items()})),
    }
    return paths


def load_tokens(data_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(data_dir) / TOKENS_FILE
    if not path.is_file():
        raise ShiptwoError(f"{path}: token file missing (run prepare_data / shiptwo build first)")
    try:
        tokens = st_load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise ShiptwoError(f"{path}: corrupt token file ({str(exc).splitlines()[0]})") from None
    missing = [s for s in SPLITS if s not in tokens]
    if missing:
        raise ShiptwoError(f"{path}: split(s) {', '.join(missing)} missing")
    return tokens


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def provenance_of(corpus_manifest: dict) -> dict[str, str]:
    return {META_LICENSE: WEIGHTS_LICENSE, META_DATA_SOURCE: corpus_manifest["data_source"],
            META_DATA_LICENSE: corpus_manifest["data_license"]}


def train_recipe(recipe: Recipe, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
                 code_version: str | None = None) -> TrainResult:
    """Train `recipe` on the prepared data in data_dir, writing checkpoints and logs to out_dir."""
    data = Path(data_dir)
    tokens = load_tokens(data)
    tokenizer_json = _read_text(data / TOKENIZER_FILE, "tokenizer")
    BPETokenizer.from_json(tokenizer_json, source=str(data / TOKENIZER_FILE))  # must parse
    manifest_path = data / CORPUS_MANIFEST
    try:
        manifest = json.loads(_read_text(manifest_path, "corpus manifest"))
    except json.JSONDecodeError:
        raise ShiptwoError(f"{manifest_path}: the corpus manifest is not valid JSON") from None
    kwargs = {"code_version": code_version} if code_version else {}
    return train(recipe.train, recipe.model, tokens["train"], tokens["validation"], out_dir, tokenizer_json,
                 provenance_of(manifest), resume=resume, **kwargs)


# --- the artifact-store builder for MODEL-2 ------------------------------------------------

def _model2_fingerprint(profile: str, options: dict):
    from shiptwo.training.recipes import load_recipe

    recipe = load_recipe("model2", profile)
    if options.get("device"):
        recipe.train = dataclasses.replace(recipe.train, device=options["device"])
    if options.get("force_under_provisioned"):
        recipe.train = dataclasses.replace(recipe.train, force_under_provisioned=True)
    corpus = load_corpus(recipe.corpus)
    parts = {"recipe": recipe.to_dict(), "train": dataclasses.asdict(recipe.train), "corpus": corpus.fingerprint()}
    return Fingerprint(parts, (recipe, corpus))


def _model2_run(profile: str, fp, workdir: Path) -> tuple[dict[str, str], dict, dict]:
    """Prepare the data and train; in the work directory of an interrupted build of the same key
    (the store hands it over), continue from its saved training state instead."""
    recipe, corpus = fp.context
    resume = all((workdir / f).is_file() for f in (TRAIN_STATE, TOKENS_FILE, TOKENIZER_FILE, CORPUS_MANIFEST))
    if not resume:
        prepare_data(recipe, workdir, corpus)
    result = train_recipe(recipe, workdir, workdir, resume=resume, code_version=fp.parts["code"])
    return dict(ROLES), {**recipe.to_dict(), "train": dataclasses.asdict(recipe.train)}, result.summary


BUILDER = Builder("model2", _model2_fingerprint, _model2_run, entry=__name__, roles=lambda profile, fp: frozenset(ROLES),
                  resumable=True)
