"""MODEL-2 training criteria, measured on the real artifacts `shiptwo build model2` produces, and
on live training runs of the shipped recipe where a criterion is about the trainer itself."""

from __future__ import annotations

import json

import pytest

from shiptwo.harness.results import EVIDENCE_LOSS_CURVE

LIVE_STEPS = 3  # AC-SHIP2-016: live training steps whose tensors are inspected



@pytest.fixture(scope="module")
def recipe(profile):
    from shiptwo.training.recipes import load_recipe

    return load_recipe("model2", profile)


@pytest.fixture(scope="module")
def summary(model2_checkpoint):
    """The training summary as recorded in the shipped checkpoint's metadata."""
    return model2_checkpoint.training


@pytest.fixture(scope="module")
def optimizer_steps(model2_artifacts):
    """The steps the run made, by the optimizer's own counter in the training state (not the trainer's records)."""
    from shiptwo.checks.training_facts import optimizer_steps

    return optimizer_steps(model2_artifacts.files["train_state"])


@pytest.fixture(scope="module")
def train_split_tokens(recipe, model2_artifacts):
    """The train split's length: the corpus re-tokenized with the shipped tokenizer, which must be the token file's."""
    from shiptwo.checks.training_facts import train_split_tokens
    from shiptwo.data.corpus import load_corpus

    return train_split_tokens(model2_artifacts.root, load_corpus(recipe.corpus), model2_artifacts.tokenizer)


@pytest.fixture(scope="module")
def provenance(model2_artifacts):
    from shiptwo.builds.model2 import provenance_of

    return provenance_of(json.loads(model2_artifacts.corpus_manifest.read_text(encoding="utf-8")))


@pytest.mark.ac("AC-SHIP2-001")
def test_architecture_contract(criterion, recipe, model2_artifacts):
    """The tensors in the shipped checkpoint file against the shapes the recipe's declaration implies."""
    from shiptwo.checks.checkpoint import checkpoint_contract_violations

    measured, evidence = checkpoint_contract_violations(model2_artifacts.checkpoint, recipe.model_declared,
                                                        recipe.declared_parameters, criterion.param("parameter_tolerance"))
    checked = evidence["checked"]  # n: every tensor, the parameter count and every config field compared
    criterion.check(measured, n=sum(checked.values()), evidence={
        **evidence, "recipe": recipe.path, "checkpoint": model2_artifacts.checkpoint,
        "summary": "violations over " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in checked.items())})


@pytest.mark.ac("AC-SHIP2-002")
def test_tokenizer_roundtrip(criterion, recipe, model2_artifacts):
    from shiptwo.data.corpus import load_corpus
    from shiptwo.checks.tokenizer import roundtrip_mismatches
    from shiptwo.model.tokenizer import BPETokenizer

    tok = BPETokenizer.from_file(model2_artifacts.tokenizer)
    corpus = load_corpus(recipe.corpus)
    held_out = corpus.texts("validation") + corpus.texts("test")
    assert held_out, "no held-out documents to check"
    criterion.check(roundtrip_mismatches(tok, held_out), n=len(held_out),
                    evidence={"tokenizer": model2_artifacts.tokenizer, "held_out_documents": len(held_out)})


@pytest.mark.ac("AC-SHIP2-003")
def test_validation_cross_entropy(criterion, recipe, model2_checkpoint, model2_artifacts):
    """CE of the shipped checkpoint on the corpus's validation split, re-tokenized here with the shipped
    tokenizer (not the token file the build wrote), each document windowed alone as lm-evaluation-harness
    scores a corpus's perplexity (no context across documents); token-weighted, its 95% interval a
    bootstrap over documents (the sampled unit: windows of one document are not independent). The
    untouched test split beside it, since the best checkpoint was chosen on validation, and what each
    is made of: every document's CE, the document-weighted (macro) mean and the largest document's share
    of the targets, since one document can be most of the figure. Legs count the validation and the
    test documents that are near-duplicates of the train split, which would make those CEs optimistic,
    and the near-copies between validation and test, which would make the test CE depend on the split
    the checkpoint was chosen on: re-measured here against the spec's share by shiptwo.checks.leakage's
    own lexer and n-gram code, not the corpus builder's."""
    from shiptwo.checks.heldout import breakdown_summary, document_cross_entropy
    from shiptwo.checks.leakage import held_out_overlap
    from shiptwo.data.corpus import load_corpus
    from shiptwo.fileio import atomic_write_json
    from shiptwo.model.tokenizer import BPETokenizer

    tok = BPETokenizer.from_file(model2_artifacts.tokenizer)
    corpus = load_corpus(recipe.corpus)
    share, ngram = criterion.param("near_duplicate_share"), criterion.param("ngram_tokens")
    leak = held_out_overlap(corpus, share, ngram)
    overlap = atomic_write_json(criterion.evidence_dir / "split_overlap.json", leak)
    model = model2_checkpoint.build_model()
    by_doc = {s: document_cross_entropy(model, tok, [(d.path, d.text) for d in corpus.splits[s]], recipe.train.seq_len,
                                        recipe.train.batch_size) for s in ("validation", "test")}
    documents = atomic_write_json(criterion.evidence_dir / "cross_entropy_by_document.json", by_doc)
    val, test = by_doc["validation"], by_doc["test"]
    lv, lt = leak["validation"], leak["test"]
    cross, back = leak["test_in_validation"], leak["validation_in_test"]
    # a count of 0 near-copies among 0 documents judged is no evidence (a measure that read nothing)
    assert lv["documents_judged"] and lt["documents_judged"], f"no held-out document long enough to judge: {overlap}"
    criterion.check(val["token_weighted"], interval=val["token_weighted_interval"], n=val["documents_counted"],
                    legs={"validation_near_duplicates": {"value": lv["near_duplicates"], "n": lv["documents_judged"]},
                          "test_near_duplicates": {"value": lt["near_duplicates"], "n": lt["documents_judged"]},
                          "held_out_near_copies": {"value": cross["near_duplicates"] + back["near_duplicates"],
                                                   "n": cross["documents_judged"] + back["documents_judged"]}},
                    evidence={
        "checkpoint": model2_artifacts.checkpoint, "tokenizer": model2_artifacts.tokenizer,
        EVIDENCE_LOSS_CURVE: model2_artifacts.loss_curve, "split_overlap": overlap,
        "cross_entropy_by_document": documents,
        **{s: {k: v for k, v in d.items() if k != "documents"} for s, d in by_doc.items()},
        "summary": f"CE over all {val['targets']} targets of the re-tokenized validation split, each of its "
                   f"{val['documents_counted']} documents windowed alone (seq {recipe.train.seq_len}); 95% interval: "
                   f"bootstrap over documents. Validation {breakdown_summary(val)}; test {breakdown_summary(test)}. "
                   f"Overlap with train ({ngram}-token n-grams, every document): validation {lv['ngrams_in_reference']} of "
                   f"{lv['ngrams']} ({lv['ngram_share']:.1%}), {lv['near_duplicates']} of {lv['documents_judged']} documents "
                   f">= {share:.0%}; test {lt['ngrams_in_reference']} of {lt['ngrams']} ({lt['ngram_share']:.1%}), "
                   f"{lt['near_duplicates']} of {lt['documents_judged']} documents >= {share:.0%}. Between them: "
                   f"{cross['near_duplicates']} test documents >= {share:.0%} in validation, {back['near_duplicates']} "
                   f"validation documents >= {share:.0%} in test ({leak['documents_lexed_by_fallback']} documents "
                   "not read by Python's tokenize)"})


@pytest.mark.ac("AC-SHIP2-004")
def test_training_wall_clock(criterion, summary, model2_artifacts):
    """The artifact store's clock around the whole MODEL-2 build (data preparation and training),
    recorded in its manifest when built: independent of, and stricter than, the trainer's own figure,
    which stays beside it as evidence only."""
    from shiptwo.checks.training import build_wall_seconds

    criterion.check(build_wall_seconds(model2_artifacts), evidence={
        "measured_by": "artifact store: build_seconds in the artifact manifest (at least the training state's clock)", "manifest": model2_artifacts.manifest,
        "build_resumed": model2_artifacts.build_resumed,  # False here: a resumed build's partial time is refused
        "trainer_wall_seconds": model2_artifacts.summary.get("wall_seconds"), "steps": summary["steps"],
        "device": summary["device_used"], "tokens_per_second": model2_artifacts.summary.get("tokens_per_second"),
        "train_log": model2_artifacts.train_log})


@pytest.mark.ac("AC-SHIP2-005")
def test_checkpoint_reload_bit_exact(criterion, model2_artifacts):
    from shiptwo.checks.checkpoint import checkpoint_reload_defects

    a = model2_artifacts
    n_best, best_problems, best_checked = checkpoint_reload_defects(a.checkpoint, a.files["train_state"], a.tokenizer, "best/")
    n_final, final_problems, final_checked = checkpoint_reload_defects(a.final_checkpoint, a.files["train_state"], a.tokenizer,
                                                                       "model/")
    # n: the tensors and metadata items compared in both checkpoints, by kind in the evidence
    criterion.check(n_best + n_final, n=sum(best_checked.values()) + sum(final_checked.values()), evidence={
        "checkpoint": a.checkpoint, "final_checkpoint": a.final_checkpoint, "problems": (best_problems + final_problems)[:10],
        "checked": {"best": best_checked, "final": final_checked}})


@pytest.mark.ac("AC-SHIP2-011")
def test_reproducible_training(criterion, recipe, model2_artifacts, provenance, tmp_path_factory):
    """The shipped recipe's model, training config and data for this profile, first `steps` steps, three runs."""
    from shiptwo.builds.model2 import load_tokens
    from shiptwo.checks.training import reproducibility_runs

    tokens = load_tokens(model2_artifacts.root)
    violations, evidence = reproducibility_runs(
        recipe.train, recipe.model, tokens["train"], tokens["validation"], criterion.param("steps"),
        tmp_path_factory.mktemp("repro"), model2_artifacts.tokenizer.read_text(encoding="utf-8"), provenance,
        loss_tol=criterion.param("loss_tolerance"))
    criterion.check(violations, n=len(evidence["compared"]), evidence={**evidence, "recipe": recipe.path, "profile": recipe.profile,
                                          "parameters": recipe.model.num_parameters()})


@pytest.mark.ac("AC-SHIP2-014")
def test_chinchilla_ratio(criterion, recipe, summary, model2_artifacts, model2_checkpoint, optimizer_steps, train_split_tokens):
    """D = unique training tokens: the corpus's train split re-tokenized with the shipped tokenizer (at
    most what was seen); tokens seen: the optimizer's steps x the recipe's tokens per step; N = the
    parameters in the shipped checkpoint file. The step log's own count stays beside it as evidence."""
    from shiptwo.checks.training import chinchilla_figures

    log = [json.loads(x) for x in model2_artifacts.train_log.read_text(encoding="utf-8").splitlines() if x]
    logged = max((e["tokens"] for e in log if e.get("type") == "train"), default=0)
    parameters = sum(t.numel() for t in model2_checkpoint.tensors.values())
    figures = chinchilla_figures(train_split_tokens, optimizer_steps * recipe.train.tokens_per_step, parameters)
    criterion.check(figures["tokens_per_parameter"], evidence={
        **figures, "optimizer_steps": optimizer_steps, "tokens_per_step": recipe.train.tokens_per_step,
        "tokens_seen_in_log": logged, "forced": summary["chinchilla_forced"], "train_log": model2_artifacts.train_log,
        "measured_by": "D: the corpus's train split re-tokenized (equal to the token file); seen: the optimizer's step "
                       "counter in the training state x the recipe's tokens per step"})


@pytest.mark.ac("AC-SHIP2-015")
def test_no_silent_wraparound(criterion, recipe, summary, model2_artifacts, optimizer_steps, train_split_tokens):
    """Wraps derived from the train split's length (the corpus re-tokenized), the recipe's windows and
    the steps made (the optimizer's counter, the log's and the summary's), against what the summary
    and the step log report."""
    from shiptwo.checks.training import unreported_wraps, wraps_in_log

    logged_wraps, logged_steps = wraps_in_log(model2_artifacts.train_log)
    measured, evidence = unreported_wraps(summary, logged_wraps, logged_steps, train_split_tokens, recipe.train,
                                          optimizer_steps=optimizer_steps)
    criterion.check(measured, n=len(evidence["records_compared"]),  # n: the records held to the derived wraps
                    evidence={**evidence, "wraps": summary["wraps"], "train_log": model2_artifacts.train_log})


@pytest.mark.ac("AC-SHIP2-016")
def test_no_silent_device_fallback(criterion, recipe, model2_artifacts, provenance, tmp_path_factory):
    """A few live training steps of the shipped recipe's model: every parameter, gradient and
    optimizer-state tensor inspected for its device; and a missing device must be refused."""
    import dataclasses

    from shiptwo.builds.model2 import load_tokens
    from shiptwo.checks.training import (device_census_violations, expected_device, missing_device_refused,
                                         tensor_device_census, token_prefix_data)
    from shiptwo.training.loop import train

    work = tmp_path_factory.mktemp("device")
    windows = 8 * recipe.train.batch_size * recipe.train.grad_accum
    data = token_prefix_data(model2_artifacts.root, work / "data", windows * (recipe.train.seq_len + 1))
    tokens = load_tokens(data)
    expected = expected_device(recipe.train.device)
    census = []
    cfg = dataclasses.replace(recipe.train, checkpoint_interval=None, force_under_provisioned=True)  # a few steps only
    train(cfg, recipe.model, tokens["train"], tokens["validation"], work / "run",
          model2_artifacts.tokenizer.read_text(encoding="utf-8"), provenance, stop_after=LIVE_STEPS,
          observe=lambda model, opt, step: census.append(tensor_device_census(model, opt, expected)))
    not_refused, fault = missing_device_refused(data, criterion.profile, work / "fault")
    tensors = sum(ev["checked"] for _, ev in census)  # n: tensors inspected over the steps, and each step (observed or not)
    criterion.check(device_census_violations(census, LIVE_STEPS), n=tensors + LIVE_STEPS,
                    legs={"missing_device_not_refused": not_refused}, evidence={
        "requested": recipe.train.device, "steps_observed": len(census), "census_last_step": census[-1][1] if census else None,
        "fault_leg": fault, "summary": f"tensors off {expected} over {tensors} tensors checked in {len(census)} observed "
                                       f"steps, plus steps of {LIVE_STEPS} never observed"})


@pytest.mark.ac("AC-SHIP2-017")
def test_no_premature_early_stop(criterion, recipe, summary, model2_artifacts, optimizer_steps):
    """The recorded stop reason against the recipe's own limits (planned steps, min_steps, patience,
    wall-clock limit), a wall-clock stop also against the store's clock; the steps judged are the
    optimizer's own count, and a record that says otherwise is a violation."""
    from shiptwo.checks.training import build_wall_seconds, early_stop_violations

    # the checkpoint's record has no clock readings (training/loop.VARYING_FIELDS): the trainer's comes from the build's summary
    trainer_clock = {"wall_seconds": model2_artifacts.summary.get("wall_seconds")}
    # the store's clock where it timed the whole build (a resumed build's covers its last leg only)
    n, problems, checked = early_stop_violations({**summary, **trainer_clock}, recipe.train,
                                                 build_wall_seconds(model2_artifacts, whole=False), optimizer_steps)
    criterion.check(n, n=len(checked), evidence={"problems": problems, "checked": checked, "planned_steps": recipe.train.total_steps(),
                                 "recipe_min_steps": recipe.train.min_steps, "recipe_patience": recipe.train.patience,
                                 "recipe_max_wall_seconds": recipe.train.max_wall_seconds,
                                 "optimizer_steps": optimizer_steps,
                                 **{k: summary.get(k) for k in ("stop_reason", "steps", "best_step")}, **trainer_clock})
