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
from safetensors.torch import save as st_save

from shiptwo import constants as C
from shiptwo.corpus import SPLITS, Corpus, load_corpus
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_bytes, atomic_write_json
from shiptwo.recipes import Recipe
from shiptwo.tokenizer import BPETokenizer, train_tokenizer
from shiptwo.train import TrainResult, train

WEIGHTS_LICENSE = "Apache-2.0"


def encode_split(tok: BPETokenizer, texts: list[str]) -> torch.Tensor:
    """Documents joined into one stream, each followed by the end-of-text token (int32)."""
    ids: list[int] = []
    for doc in tok.encode_batch(texts):
        ids.extend(doc)
        ids.append(tok.eot_id)
    return torch.tensor(ids, dtype=torch.int32)


def roundtrip_mismatches(tok: BPETokenizer, texts: list[str]) -> int:
    """AC-SHIP2-002: documents whose encode→decode is not byte-exact."""
    return sum(1 for t, ids in zip(texts, tok.encode_batch(texts)) if tok.decode(ids).encode() != t.encode())


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
        "tokenizer": tok.save(out / C.TOKENIZER_FILE),
        "tokens": atomic_write_bytes(out / C.TOKENS_FILE, st_save(tokens)),
        "corpus_manifest": atomic_write_json(out / C.CORPUS_MANIFEST, corpus.manifest({s: len(t) for s, t in tokens.items()})),
    }
    return paths


def load_tokens(data_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(data_dir) / C.TOKENS_FILE
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
    return {C.META_LICENSE: WEIGHTS_LICENSE, C.META_DATA_SOURCE: corpus_manifest["data_source"],
            C.META_DATA_LICENSE: corpus_manifest["data_license"]}


def train_recipe(recipe: Recipe, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
                 code_version: str | None = None) -> TrainResult:
    """Train `recipe` on the prepared data in data_dir, writing checkpoints and logs to out_dir."""
    data = Path(data_dir)
    tokens = load_tokens(data)
    tokenizer_json = _read_text(data / C.TOKENIZER_FILE, "tokenizer")
    BPETokenizer.from_json(tokenizer_json, source=str(data / C.TOKENIZER_FILE))  # must parse
    manifest_path = data / C.CORPUS_MANIFEST
    try:
        manifest = json.loads(_read_text(manifest_path, "corpus manifest"))
    except json.JSONDecodeError:
        raise ShiptwoError(f"{manifest_path}: the corpus manifest is not valid JSON") from None
    kwargs = {"code_version": code_version} if code_version else {}
    return train(recipe.train, recipe.model, tokens["train"], tokens["validation"], out_dir, tokenizer_json,
                 provenance_of(manifest), resume=resume, **kwargs)


def checkpoint_reload_defects(checkpoint: str | Path, state: str | Path, tokenizer: str | Path,
                              prefix: str = "best/") -> tuple[int, list[str]]:
    """AC-SHIP2-005: tensors of a saved checkpoint that differ (bitwise) from the trained tensors kept in
    the training state, plus metadata defects (format, embedded tokenizer, re-save round trip)."""
    import tempfile

    from shiptwo.checkpoint import load_checkpoint, read_safetensors_metadata, save_checkpoint

    checkpoint, problems = Path(checkpoint), []
    ckpt = load_checkpoint(checkpoint)
    trained = {k[len(prefix):]: v for k, v in st_load_file(str(state)).items() if k.startswith(prefix)}
    if not trained:
        problems.append(f"{state}: no '{prefix}' tensors to compare with")
    for name in sorted(set(trained) | set(ckpt.tensors)):
        a, b = ckpt.tensors.get(name), trained.get(name)
        if a is None or b is None or a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            problems.append(f"tensor {name} differs from the trained tensor")
    if ckpt.tokenizer_json != Path(tokenizer).read_text(encoding="utf-8"):
        problems.append(f"embedded tokenizer differs from {tokenizer}")
    if not ckpt.training:
        problems.append(f"metadata {C.META_TRAINING} missing")
    with tempfile.TemporaryDirectory() as tmp:
        again = load_checkpoint(save_checkpoint(ckpt, Path(tmp) / "resaved.safetensors"))
        meta_a = read_safetensors_metadata(checkpoint.read_bytes(), checkpoint)
        meta_b = read_safetensors_metadata(again.path.read_bytes(), again.path)
        problems += [f"metadata {k} changes on re-save" for k in sorted(set(meta_a) | set(meta_b)) if meta_a.get(k) != meta_b.get(k)]
        problems += [f"tensor {k} changes on re-save" for k in ckpt.tensors if not torch.equal(ckpt.tensors[k], again.tensors[k])]
    return len(problems), problems


def wraps_in_log(log_path: str | Path) -> int:
    """Epoch increments seen in the step log: an independent count of wrap-arounds (AC-SHIP2-015)."""
    epochs = [json.loads(line)["epoch"] for line in Path(log_path).read_text(encoding="utf-8").splitlines()
              if line and json.loads(line).get("type") == "train"]
    return epochs[-1] if epochs else 0  # epochs are numbered from 0: the last one is the wrap count


# --- the artifact-store builder for MODEL-2 ------------------------------------------------

# The modules whose source decides what a MODEL-2 artifact contains (hashed into its store key).
MODEL2_MODULES = ("__init__", "checkpoint", "constants", "corpus", "errors", "fileio", "generate", "model",
                  "plots", "pretrain", "recipes", "tokenizer", "train")


def _model2_fingerprint(profile: str, options: dict):
    from shiptwo.recipes import load_recipe
    from shiptwo.store import Fingerprint

    recipe = load_recipe("model2", profile)
    if options.get("device"):
        recipe.train = dataclasses.replace(recipe.train, device=options["device"])
    if options.get("force_under_provisioned"):
        recipe.train = dataclasses.replace(recipe.train, force_under_provisioned=True)
    corpus = load_corpus(recipe.corpus)
    parts = {"recipe": recipe.to_dict(), "train": dataclasses.asdict(recipe.train), "corpus": corpus.fingerprint()}
    return Fingerprint(parts, (recipe, corpus))


def _model2_run(profile: str, fp, workdir: Path) -> tuple[dict[str, str], dict, dict]:
    recipe, corpus = fp.context
    prepare_data(recipe, workdir, corpus)
    result = train_recipe(recipe, workdir, workdir, code_version=fp.parts["code"])
    roles = {
        "tokenizer": C.TOKENIZER_FILE, "tokens": C.TOKENS_FILE, "corpus_manifest": C.CORPUS_MANIFEST,
        "checkpoint": C.BEST_CHECKPOINT, "final_checkpoint": C.FINAL_CHECKPOINT, "train_log": C.TRAIN_LOG,
        "loss_curve": C.LOSS_CURVE, "train_state": C.TRAIN_STATE,
    }
    return roles, {**recipe.to_dict(), "train": dataclasses.asdict(recipe.train)}, result.summary


def _register() -> None:
    from shiptwo.store import Builder, register

    register("model2", Builder(_model2_fingerprint, _model2_run, MODEL2_MODULES))


_register()
