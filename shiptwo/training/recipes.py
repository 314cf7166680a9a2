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
from shiptwo.model.config import ModelConfig
from shiptwo.training.config import check_field_types
from shiptwo.training.loop import TrainConfig

from shiptwo.paths import recipe_path

PROFILE_KEYS = ("rationale", "declared_parameters", "model", "corpus", "tokenizer", "train")


@dataclass
class Recipe:
    """One model's recipe under one profile, validated."""

    model_name: str
    profile: str
    path: Path
    model: ModelConfig
    model_declared: dict  # the model block exactly as written (for the field-by-field contract)
    declared_parameters: int
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
    if not isinstance(block["corpus"], dict):
        raise ShiptwoError(f"{where}.corpus: not a mapping")
    check_field_types(CorpusConfig, block["corpus"], f"{where}.corpus")
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
    vocab = block["tokenizer"].get("vocab_size", 0) if isinstance(block["tokenizer"], dict) else None
    for field, value in (("tokenizer.vocab_size", vocab), ("declared_parameters", block["declared_parameters"])):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ShiptwoError(f"{where}.{field}: {value!r} is not int")
    if vocab != model.vocab_size:
        raise ShiptwoError(f"{where}.tokenizer.vocab_size {vocab} differs from model.vocab_size {model.vocab_size}")
    if train.seq_len > model.max_position_embeddings:
        raise ShiptwoError(f"{where}.train.seq_len {train.seq_len} exceeds model.max_position_embeddings")
    return Recipe(
        model_name=model_name, profile=profile, path=path, model=model, model_declared=dict(block["model"]),
        declared_parameters=block["declared_parameters"],
        corpus=corpus, vocab_size=vocab, train=train,
        rationale=str(block["rationale"]), raw=block,
    )


def recipe_summary(recipe: Recipe) -> dict:
    """What the report shows about the recipe: JSON-ready."""
    return {"model_name": recipe.model_name, "profile": recipe.profile, "path": str(recipe.path),
            "model": recipe.model.to_dict(), "train": dataclasses.asdict(recipe.train),
            "declared_parameters": recipe.declared_parameters}


# --- MODEL-1: a release-path model, optionally instruction-tuned --------------------------

MODEL1_PROFILE_KEYS = ("rationale", "base", "sft", "release", "humaneval")
SFT_KEYS = ("corpus", "max_pairs", "max_answer_chars", "validation_pairs", "train")
PACKAGED_BASE_KEYS = ("package", "file", "sha256", "name", "source", "license", "data_source", "data_license")
HUMANEVAL_KEYS = ("reference", "limit", "prompt")
BASE_MODEL2 = "model2"


@dataclass(frozen=True)
class PackagedBase:
    """A model file inside an installed Python package, pinned by SHA-256, with its upstream provenance."""

    package: str
    file: str
    sha256: str
    name: str
    source: str
    license: str
    data_source: str
    data_license: str

    def locate(self, where: str = "base") -> Path:
        """The file's path, found without importing the package; its SHA-256 must match the recipe's."""
        import importlib.util

        from shiptwo.fileio import sha256_file

        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ShiptwoError(f"{where}: package {self.package!r} is not installed (make venv installs it)")
        path = Path(list(spec.submodule_search_locations)[0]) / self.file
        if not path.is_file():
            raise ShiptwoError(f"{where}: {path}: no such file in package {self.package!r}")
        digest = sha256_file(path)
        if digest != self.sha256:
            raise ShiptwoError(f"{where}: {path}: SHA-256 {digest} differs from the recipe's {self.sha256}")
        return path

    def provenance(self) -> dict[str, str]:
        return {"license": self.license, "data_source": self.data_source, "data_license": self.data_license}


@dataclass
class SFTConfig:
    """Instruction tuning: where the docstring -> function pairs come from, how many, the training run."""

    corpus: CorpusConfig
    max_pairs: int
    max_answer_chars: int
    validation_pairs: int
    train: TrainConfig


@dataclass
class Model1Recipe:
    """MODEL-1's recipe under one profile: the base, optional tuning, the release formats, HumanEval."""

    profile: str
    path: Path
    base: str | PackagedBase  # "model2", a path (HF directory, native checkpoint, GGUF), or a packaged file
    sft: SFTConfig | None
    quantized: tuple[str, ...]  # GGUF types shipped: q8_0 (ours), q4_k_m (llama.cpp's quantizer)
    humaneval_reference: Path | None  # the committed reference AC-SHIP1-005 reproduces (None: none)
    humaneval_limit: int | None  # first N problems; None: all
    humaneval_prompt: dict  # the chat prompt format (validated by measure.evals.humaneval_chat)
    rationale: str
    raw: dict

    def to_dict(self) -> dict:
        return {"model_name": "model1", "profile": self.profile, **self.raw}


def _exact_keys(block, keys: tuple[str, ...], where: str) -> dict:
    if not isinstance(block, dict) or sorted(block) != sorted(keys):
        raise ShiptwoError(f"{where}: needs exactly the fields {', '.join(keys)}")
    return block


def _base(value, where: str) -> str | PackagedBase:
    if isinstance(value, dict):
        fields = _exact_keys(value, PACKAGED_BASE_KEYS, where)
        if not all(isinstance(v, str) and v for v in fields.values()):
            raise ShiptwoError(f"{where}: every field must be a non-empty string")
        return PackagedBase(**fields)
    if not isinstance(value, str) or not value:
        raise ShiptwoError(f"{where}: must be 'model2', a path, or a packaged model mapping")
    return value


def _sft(block, where: str) -> SFTConfig | None:
    if block is None:
        return None
    block = _exact_keys(block, SFT_KEYS, where)
    try:
        ints = {k: int(block[k]) for k in ("max_pairs", "max_answer_chars", "validation_pairs")}
    except (TypeError, ValueError):
        raise ShiptwoError(f"{where}: max_pairs, max_answer_chars, validation_pairs must be integers") from None
    return SFTConfig(corpus=_corpus_config(block, where), train=TrainConfig.from_dict(block["train"], source=f"{where}.train"),
                     **ints)


def load_model1_recipe(profile: str, path: str | Path | None = None) -> Model1Recipe:
    """Load and validate `profile` of MODEL-1's recipe (spec/recipes/model1.yaml)."""
    path, block, where = _profile_block("model1", profile, path, MODEL1_PROFILE_KEYS)
    release = _exact_keys(block["release"], ("quantized",), f"{where}.release")
    quantized = release["quantized"]
    if not isinstance(quantized, list) or not all(isinstance(q, str) for q in quantized):
        raise ShiptwoError(f"{where}.release.quantized: must be a list of GGUF type names")
    he = _exact_keys(block["humaneval"], HUMANEVAL_KEYS, f"{where}.humaneval")
    limit = he["limit"]
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ShiptwoError(f"{where}.humaneval.limit: must be a positive integer or null")
    ref = he["reference"]
    if ref is not None and not isinstance(ref, str):
        raise ShiptwoError(f"{where}.humaneval.reference: must be a path or null")
    return Model1Recipe(
        profile=profile, path=path, base=_base(block["base"], f"{where}.base"), sft=_sft(block["sft"], f"{where}.sft"),
        quantized=tuple(quantized), humaneval_limit=limit, humaneval_prompt=he["prompt"],
        humaneval_reference=None if ref is None else path.parents[2] / ref,  # relative to the repository root
        rationale=str(block["rationale"]), raw=block,
    )
