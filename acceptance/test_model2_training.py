"""MODEL-2 training criteria, measured on the real artifacts `shiptwo build model2` produces."""

from __future__ import annotations

import json

import pytest

from shiptwo.harness.results import EVIDENCE_LOSS_CURVE



@pytest.fixture(scope="module")
def recipe(profile):
    from shiptwo.training.recipes import load_recipe

    return load_recipe("model2", profile)


@pytest.fixture(scope="module")
def summary(model2_checkpoint):
    """The training summary as recorded in the shipped checkpoint's metadata."""
    return model2_checkpoint.training


@pytest.mark.ac("AC-SHIP2-001")
def test_architecture_contract(criterion, recipe, model2_checkpoint):
    from shiptwo.checks.checkpoint import architecture_mismatches
    built = model2_checkpoint.build_model()  # the module the trained tensors load into
    measured, problems = architecture_mismatches(recipe.model_declared, recipe.declared_parameters,
                                                 recipe.parameter_tolerance, model=built)
    criterion.check(measured, evidence={"recipe": recipe.path, "declared_parameters": recipe.declared_parameters,
                                        "live_parameters": built.num_parameters(), "problems": problems})


@pytest.mark.ac("AC-SHIP2-002")
def test_tokenizer_roundtrip(criterion, recipe, model2_artifacts):
    from shiptwo.data.corpus import load_corpus
    from shiptwo.checks.tokenizer import roundtrip_mismatches
    from shiptwo.model.tokenizer import BPETokenizer

    tok = BPETokenizer.from_file(model2_artifacts.tokenizer)
    corpus = load_corpus(recipe.corpus)
    held_out = corpus.texts("validation") + corpus.texts("test")
    assert held_out, "no held-out documents to check"
    criterion.check(roundtrip_mismatches(tok, held_out),
                    evidence={"tokenizer": model2_artifacts.tokenizer, "held_out_documents": len(held_out)})


@pytest.mark.ac("AC-SHIP2-003")
def test_validation_cross_entropy(criterion, recipe, model2_checkpoint, model2_artifacts):
    from shiptwo.builds.model2 import load_tokens
    from shiptwo.training.loop import evaluate_loss

    val = load_tokens(model2_artifacts.root)["validation"]
    ce = evaluate_loss(model2_checkpoint.build_model(), val, recipe.train.seq_len, recipe.train.batch_size)
    criterion.check(ce, evidence={"checkpoint": model2_artifacts.checkpoint, "validation_tokens": len(val),
                                  EVIDENCE_LOSS_CURVE: model2_artifacts.loss_curve})


@pytest.mark.ac("AC-SHIP2-004")
def test_training_wall_clock(criterion, summary, model2_artifacts):
    criterion.check(summary["wall_seconds"], evidence={"steps": summary["steps"], "device": summary["device_used"],
                                                       "tokens_per_second": summary["tokens_per_second"],
                                                       "train_log": model2_artifacts.train_log})


@pytest.mark.ac("AC-SHIP2-005")
def test_checkpoint_reload_bit_exact(criterion, model2_artifacts):
    from shiptwo.checks.checkpoint import checkpoint_reload_defects

    a = model2_artifacts
    n_best, best_problems = checkpoint_reload_defects(a.checkpoint, a.files["train_state"], a.tokenizer, "best/")
    n_final, final_problems = checkpoint_reload_defects(a.final_checkpoint, a.files["train_state"], a.tokenizer, "model/")
    criterion.check(n_best + n_final, evidence={"checkpoint": a.checkpoint, "final_checkpoint": a.final_checkpoint,
                                                "problems": (best_problems + final_problems)[:10]})


@pytest.mark.ac("AC-SHIP2-011")
def test_reproducible_training(criterion, tmp_path_factory):
    """Measured with the smoke profile's model and data whatever the active profile (seconds, not minutes)."""
    from shiptwo.builds.model2 import load_tokens, provenance_of
    from shiptwo.training.recipes import load_recipe
    from shiptwo.builds.registry import build
    from shiptwo.checks.training import reproducibility_runs

    smoke = build("model2", "smoke")
    recipe = load_recipe("model2", "smoke")
    tokens = load_tokens(smoke.root)
    violations, evidence = reproducibility_runs(
        recipe.train, recipe.model, tokens["train"], tokens["validation"], 100, tmp_path_factory.mktemp("repro"),
        smoke.tokenizer.read_text(encoding="utf-8"),
        provenance_of(json.loads(smoke.corpus_manifest.read_text(encoding="utf-8"))))
    criterion.check(violations, evidence={**evidence, "measured_with": "smoke model config and data, 100 steps"})


@pytest.mark.ac("AC-SHIP2-014")
def test_chinchilla_ratio(criterion, summary):
    criterion.check(summary["tokens_per_param"], evidence={"tokens": summary["tokens"], "parameters": summary["parameters"],
                                                           "forced": summary["chinchilla_forced"]})


@pytest.mark.ac("AC-SHIP2-015")
def test_no_silent_wraparound(criterion, summary, model2_artifacts):
    from shiptwo.checks.training import wraps_in_log
    from shiptwo.checks.training import unreported_wraps

    logged = wraps_in_log(model2_artifacts.train_log)
    measured = unreported_wraps(summary) + abs(logged - len(summary["wraps"]))
    criterion.check(measured, evidence={"epochs": summary["epochs"], "wraps": summary["wraps"], "wraps_in_log": logged,
                                        "windows_consumed": summary["windows_consumed"],
                                        "windows_per_epoch": summary["windows_per_epoch"]})


@pytest.mark.ac("AC-SHIP2-016")
def test_no_silent_device_fallback(criterion, summary):
    from shiptwo.checks.training import device_mismatches
    criterion.check(device_mismatches(summary), evidence={k: summary.get(k) for k in
                                                          ("device_requested", "device_resolved", "device_used")})


@pytest.mark.ac("AC-SHIP2-017")
def test_no_premature_early_stop(criterion, summary):
    from shiptwo.checks.training import early_stop_violations
    criterion.check(early_stop_violations(summary), evidence={k: summary.get(k) for k in
                                                              ("stop_reason", "steps", "min_steps", "patience", "best_step")})
