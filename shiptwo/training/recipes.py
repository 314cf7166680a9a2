"""Training recipes: one YAML per model under spec/recipes/, one block per compute profile.

Profiles are data (as litgpt's config list is), read by one loader; no code branches on a profile
name. `architecture_mismatches` is the AC-SHIP2-001 contract: the declared config against the
config and parameter count of the module the code actually builds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from shiptwo.data.corpus import CorpusConfig
from shiptwo.errors import ShiptwoError
from shiptwo.model.llama import ModelConfig
from shiptwo.training.loop import TrainConfig

from shiptwo.paths import recipe_path

PROFILE_KEYS = ("rationale", "declared_parameters", "parameter_tolerance",
                "model", "corpus", "tokenizer", "train")


@dataclass
class Recipe:
    """One model's recipe under one profile, validated."""

    model_name: str
    profile: str
    path: Path
    model: ModelConfig
    model_declared: dict  # the model block exactly as written (for the field-by-field contract)
    declared_parameters: int
    parameter_tolerance: float
    corpus: CorpusConfig
    vocab_size: int
    train: TrainConfig
    rationale: str
    raw: dict  # the whole profile block, as loaded (hashed into the artifact key)

    def to_dict(self) -> dict:
        return {"model_name": self.model_name, "profile": self.profile, **self.raw}

    def sha256(self) -> str:
        from shiptwo.fileio import sha256_bytes

        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())


def _profile_block(model_name: str, profile: str, path: str | Path | None, keys: tuple[str, ...]) -> tuple[Path, dict, str]:
    """Read `profiles.<profile>` of a recipe file; exactly `keys` must be present."""
    path = Path(path) if path else recipe_path(model_name)  # the spec's models.<model>.recipe
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ShiptwoError(f"{path}: cannot read recipe ({str(exc).splitlines()[0]})") from None
    profiles = (doc or {}).get("profiles") if isinstance(doc, dict) else None
    if not isinstance(profiles, dict):
        raise ShiptwoError(f"{path}: missing 'profiles' mapping")
    if profile not in profiles:
        raise ShiptwoError(f"{path}: no profile {profile!r} (has {', '.join(profiles)})")
    block = profiles[profile]
    where = f"{path}: profiles.{profile}"
    if not isinstance(block, dict):
        raise ShiptwoError(f"{where}: not a mapping")
    missing = [k for k in keys if k not in block]
    unknown = sorted(set(block) - set(keys))
    if missing or unknown:
        raise ShiptwoError(f"{where}: missing field(s) {missing} / unknown field(s) {unknown}")
    return path, block, where


def _corpus_config(block: dict, where: str) -> CorpusConfig:
    try:
        return CorpusConfig(**block["corpus"])
    except TypeError as exc:
        raise ShiptwoError(f"{where}.corpus: {exc}") from None


def load_recipe(model_name: str, profile: str, path: str | Path | None = None) -> Recipe:
    """Load and validate `profile` of the recipe; every defect is one error naming file and field."""
    path, block, where = _profile_block(model_name, profile, path, PROFILE_KEYS)
    model = ModelConfig.from_dict(block["model"], source=f"{where}.model")
    corpus = _corpus_config(block, where)
    train = TrainConfig.from_dict(block["train"], source=f"{where}.train")
    vocab = int(block["tokenizer"].get("vocab_size", 0))
    if vocab != model.vocab_size:
        raise ShiptwoError(f"{where}.tokenizer.vocab_size {vocab} differs from model.vocab_size {model.vocab_size}")
    if train.seq_len > model.max_position_embeddings:
        raise ShiptwoError(f"{where}.train.seq_len {train.seq_len} exceeds model.max_position_embeddings")
    return Recipe(
        model_name=model_name, profile=profile, path=path, model=model, model_declared=dict(block["model"]),
        declared_parameters=int(block["declared_parameters"]), parameter_tolerance=float(block["parameter_tolerance"]),
        corpus=corpus, vocab_size=vocab, train=train,
        rationale=str(block["rationale"]), raw=block,
    )


def recipe_summary(recipe: Recipe) -> dict:
    """What the report shows about the recipe: JSON-ready."""
    return {"model_name": recipe.model_name, "profile": recipe.profile, "path": str(recipe.path),
            "model": recipe.model.to_dict(), "train": dataclasses.asdict(recipe.train),
            "declared_parameters": recipe.declared_parameters}


# --- MODEL-1: instruction tuning from a base checkpoint --------------------------------------

SFT_PROFILE_KEYS = ("rationale", "base", "corpus", "sft", "train")
SFT_KEYS = ("max_pairs", "max_answer_chars", "validation_pairs", "humaneval_reference")


@dataclass
class SFTRecipe:
    """MODEL-1's recipe under one profile: the base to start from, where the pairs come from, training."""

    profile: str
    path: Path
    base: str  # "model2" (MODEL-2 of the same profile), or a Hugging Face directory / native checkpoint
    corpus: CorpusConfig
    max_pairs: int
    max_answer_chars: int
    validation_pairs: int
    humaneval_reference: Path | None  # the recorded pass@1 that AC-SHIP1-005 must reproduce (None: none yet)
    train: TrainConfig
    rationale: str
    raw: dict

    def to_dict(self) -> dict:
        return {"model_name": "model1", "profile": self.profile, **self.raw}


def load_sft_recipe(profile: str, path: str | Path | None = None) -> SFTRecipe:
    """Load and validate `profile` of MODEL-1's recipe (spec/recipes/model1.yaml)."""
    path, block, where = _profile_block("model1", profile, path, SFT_PROFILE_KEYS)
    sft = block["sft"]
    if not isinstance(sft, dict) or sorted(sft) != sorted(SFT_KEYS):
        raise ShiptwoError(f"{where}.sft: needs exactly the fields {', '.join(SFT_KEYS)}")
    if not isinstance(block["base"], str) or not block["base"]:
        raise ShiptwoError(f"{where}.base: must name 'model2' or a Hugging Face directory")
    try:
        ints = {k: int(sft[k]) for k in ("max_pairs", "max_answer_chars", "validation_pairs")}
        ref = sft["humaneval_reference"]
        humaneval = None if ref is None else path.parents[2] / str(ref)  # relative to the repository root
    except (TypeError, ValueError):
        raise ShiptwoError(f"{where}.sft: max_pairs, max_answer_chars, validation_pairs must be integers") from None
    return SFTRecipe(profile=profile, path=path, base=block["base"], corpus=_corpus_config(block, where),
                     humaneval_reference=humaneval, train=TrainConfig.from_dict(block["train"], source=f"{where}.train"),
                     rationale=str(block["rationale"]), raw=block, **ints)
