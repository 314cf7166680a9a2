"""Facts about a training run re-derived from a real smoke MODEL-2 build (its optimizer state, its
corpus and shipped tokenizer), and the records edits they see through: AC-SHIP2-014/-015/-017."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from shiptwo.builds.model2 import TOKENS_FILE, load_tokens, provenance_of
from shiptwo.checks.training import chinchilla_figures, early_stop_violations
from shiptwo.checks.training_facts import optimizer_steps, train_split_tokens
from shiptwo.data.corpus import load_corpus
from shiptwo.errors import ShiptwoError
from shiptwo.paths import ARTIFACT_ROOT_ENV
from shiptwo.training.loop import TRAIN_STATE, train
from shiptwo.training.recipes import load_recipe


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from shiptwo.builds.registry import build

    mp = pytest.MonkeyPatch()
    mp.setenv(ARTIFACT_ROOT_ENV, str(tmp_path_factory.mktemp("store")))
    yield build("model2", "smoke")
    mp.undo()


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("model2", "smoke")


def test_the_optimizer_counter_is_the_steps_an_honest_build_records(smoke):
    assert optimizer_steps(smoke.files["train_state"]) == smoke.summary["steps"] == smoke.recipe["train"]["max_steps"]


def test_a_run_cut_short_and_relabelled_is_seen_by_its_optimizer_counter(smoke, recipe, tmp_path):
    """A real run of the smoke recipe that stopped at 40 of its 80 planned steps, its checkpoint's record
    rewritten to `max_steps` after 80: the record passes AC-SHIP2-017, the optimizer state does not."""
    cfg = dataclasses.replace(recipe.train, max_steps=40, checkpoint_interval=None)
    tokens = load_tokens(smoke.root)
    res = train(cfg, recipe.model, tokens["train"], tokens["validation"], tmp_path, smoke.tokenizer.read_text(encoding="utf-8"),
                provenance_of(json.loads(smoke.corpus_manifest.read_text(encoding="utf-8"))))
    relabelled = {**res.summary, "steps": 80, "stop_reason": "max_steps"}
    assert early_stop_violations(relabelled, recipe.train)[0] == 0  # what the record alone says
    steps = optimizer_steps(tmp_path / TRAIN_STATE)
    n, problems, _ = early_stop_violations(relabelled, recipe.train, optimizer_steps=steps)
    assert steps == 40 and n == 2 and "the recipe plans 80" in problems[1]


def test_optimizer_counters_that_disagree_or_are_absent_are_refused_naming_the_file(smoke, tmp_path):
    state = load_file(str(smoke.files["train_state"]))
    name = next(k for k in state if k.startswith("opt/") and k.endswith("/step"))
    save_file({**state, name: state[name] + 5}, str(tmp_path / "edited.safetensors"))
    with pytest.raises(ShiptwoError, match=r"edited\.safetensors: the \d+ parameters' optimizer step counters are not one count \(80, 85\)"):
        optimizer_steps(tmp_path / "edited.safetensors")
    with pytest.raises(ShiptwoError, match=r"best\.safetensors: no optimizer step counter"):
        optimizer_steps(smoke.checkpoint)


def test_the_train_split_is_the_corpus_re_tokenized_and_a_padded_token_file_is_refused(smoke, recipe, tmp_path):
    """D of AC-SHIP2-014 (and the windows per epoch of -015) came from the token file's header: its
    train split padded 10x, with the log's tokens seen raised to match, took the smoke build's D/N
    from 1.15 to 20 (the default profile's bar) in a store whose manifest was re-hashed to verify."""
    corpus = load_corpus(recipe.corpus)
    honest = train_split_tokens(smoke.root, corpus, smoke.tokenizer)
    assert honest == len(load_tokens(smoke.root)["train"]) == smoke.summary["train_split_tokens"]
    seen = optimizer_steps(smoke.files["train_state"]) * recipe.train.tokens_per_step
    params = smoke.summary["parameters"]
    assert chinchilla_figures(honest, seen, params)["tokens_per_parameter"] == smoke.summary["tokens_per_param"]
    padded = tmp_path / "data"
    shutil.copytree(smoke.root, padded)
    tokens = load_file(str(padded / TOKENS_FILE))
    save_file({**tokens, "train": tokens["train"].repeat(10)}, str(padded / TOKENS_FILE))
    assert len(load_tokens(padded)["train"]) == 10 * honest  # what the check read from the file before
    with pytest.raises(ShiptwoError, match=rf"{TOKENS_FILE}: its train split \({10 * honest} tokens\) is not the corpus's "
                                           rf"train split encoded with .*tokenizer\.json \({honest} tokens\)"):
        train_split_tokens(padded, corpus, smoke.tokenizer)
    edited = tokens["train"].clone()
    edited[0] += 1
    save_file({**tokens, "train": edited}, str(padded / TOKENS_FILE))
    with pytest.raises(ShiptwoError, match="is not the corpus's train split"):  # same length, other tokens
        train_split_tokens(padded, corpus, smoke.tokenizer)


def test_a_store_manifest_edited_to_a_short_build_verifies_but_the_time_is_refused(smoke, tmp_path):
    """AC-SHIP2-004's figure is the store manifest's build_seconds, which the manifest's own hashes do
    not cover: edited to 0.01 s the set still verifies. The training state's clock refuses it."""
    from shiptwo.builds.store import ARTIFACT_MANIFEST, verify
    from shiptwo.checks.training import build_wall_seconds

    assert build_wall_seconds(smoke) == smoke.build_seconds  # an honest build: its clock covers its training
    edited = tmp_path / "set"
    shutil.copytree(smoke.root, edited)
    manifest = json.loads((edited / ARTIFACT_MANIFEST).read_text(encoding="utf-8"))
    (edited / ARTIFACT_MANIFEST).write_text(json.dumps({**manifest, "build_seconds": 0.01}), encoding="utf-8")
    assert verify(edited) is None
    short = dataclasses.replace(smoke, build_seconds=0.01, manifest=edited / ARTIFACT_MANIFEST,
                                files={**smoke.files, "train_state": edited / TRAIN_STATE})
    with pytest.raises(ShiptwoError, match=r"build_seconds 0\.0 s is less than the training it holds took"):
        build_wall_seconds(short)
