"""`shiptwo qa`: eight pass/fail gates on a model artifact, each with the figure it measured.

A checkpoint that trains fine can still be unusable downstream (background, lesson 2), so each
gate checks one thing a consumer relies on: metadata, tensor contract, tensor statistics,
tokenizer round-trip, golden behaviour (known-good answers no model recorded), no degeneration,
throughput and format parity (F32 logits against llama.cpp; a quantized GGUF against its F32
reference). A gate that cannot run says so (NOT RUN, with the reason) and does not pass.
A native checkpoint is read leniently here, so a missing piece fails its gate instead of
stopping the whole run; only an unreadable or tampered file is an error (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shiptwo.formats.artifact import KIND_GGUF, KIND_NATIVE, artifact_kind, load_artifact
from shiptwo.formats.release import release_reference, verify_recorded
from shiptwo.measure.golden import GoldenResult, GoldenSet, judge_golden, load_golden, served_prompts
from shiptwo.model.checkpoint import Checkpoint, finite_defects, read_safetensors
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_file
from shiptwo.model.generate import SamplingConfig, generate_batch
from shiptwo.model.config import ModelConfig
from shiptwo.model.tokenizer import BPETokenizer

from shiptwo.model.canaries import CANARY_PROMPTS, CANARY_STRINGS
from shiptwo.model.checkpoint import (
    ARCHITECTURE, META_ARCHITECTURE, META_CHAT_TEMPLATE, META_CONFIG, META_TOKENIZER, PROVENANCE_KEYS, REQUIRED_META_KEYS,
)
from shiptwo.paths import DEFAULT_PROFILE

QA_DEGENERATION_TOKENS = 64  # greedy tokens inspected per canary prompt
QA_REPORT_FILE = "qa-report.json"


GATES = (
    "metadata", "tensor_contract", "tensor_statistics", "tokenizer_round_trip",
    "golden_output", "no_degeneration", "throughput", "format_parity",
)


@dataclass
class QAConfig:
    """Bounds the gates apply, passed in by the caller (the acceptance test or the CLI, from the
    spec's thresholds and the parameters of AC-SHIP2-006 / AC-SHIP1-006): qa never looks one up itself."""

    min_decode_tok_s: float  # throughput floor
    parity_tol: float  # max |logit diff| ours vs llama.cpp on an F32 GGUF
    parity_greedy_steps: int  # ... and greedy tokens that must agree (both AC-SHIP2-009's)
    golden_min_pass: float  # share of golden prompts whose program must pass its check
    quant_max_kl: float  # quantized vs F32 reference: mean KL divergence per position (nats)
    quant_min_top1: float  # ... share of positions whose top token agrees
    quant_min_golden_unchanged: float  # ... share of golden prompts whose greedy continuation is unchanged
    quant_golden_tokens: int  # ... greedy tokens compared per golden prompt
    max_abs_weight: float  # a trained weight beyond this is implausible (diverged or corrupt)
    max_repetition: float  # share of an output taken by one repeating loop
    profile: str = DEFAULT_PROFILE
    reference: Path | None = None  # the F32 reference of a quantized GGUF (default: the release's own)
    golden: Path | None = None  # the golden prompt set (default: spec/golden-prompts.yaml)
    throughput_tokens: int = 64


@dataclass
class Gate:
    name: str
    passed: bool
    figure: float | int | str | None
    detail: str = ""
    ran: bool = True  # False: the gate could not run (detail says why); it does not pass


def not_run(name: str, reason: str) -> Gate:
    return Gate(name, False, None, f"not run: {reason}", ran=False)


@dataclass
class QAReport:
    artifact: str
    kind: str
    profile: str
    gates: list[Gate] = field(default_factory=list)
    golden_prompts: dict = field(default_factory=dict)  # path and SHA-256 of the golden prompt set used
    golden: list[dict] = field(default_factory=list)  # per golden prompt: id, prompt, completion, passed

    @property
    def missing(self) -> list[str]:
        """Gates of GATES the report holds no result for (a run that skipped one)."""
        present = {g.name for g in self.gates}
        return [name for name in GATES if name not in present]

    @property
    def failed(self) -> int:
        """Gates that did not pass: those that failed, could not run, or are missing from the report
        (a skipped gate must not read as a pass to the criteria that sum this figure)."""
        return sum(not g.passed for g in self.gates) + len(self.missing)

    @property
    def judged(self) -> int:
        """Gates `failed` is counted over: every gate the report holds and every one it lacks."""
        return len(self.gates) + len(self.missing)

    @property
    def not_run(self) -> list[str]:
        return [g.name for g in self.gates if not g.ran]

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "kind": self.kind, "profile": self.profile,
                "failed_gates": self.failed, "judged_gates": self.judged, "not_run": self.not_run, "missing": self.missing, "golden_prompts": self.golden_prompts,
                "gates": [dataclasses.asdict(g) for g in self.gates], "golden": self.golden}

    def to_text(self) -> str:
        lines = [f"qa {self.artifact} ({self.kind}, profile {self.profile})"]
        for n, g in enumerate(self.gates, 1):
            verdict = "PASS" if g.passed else "FAIL" if g.ran else "NOT RUN"
            lines.append(f"  {n}. {g.name:<22} {verdict}  {g.figure}  {g.detail}".rstrip())
        lines += [f"  missing: {name}" for name in self.missing]
        lines.append(f"{self.judged - self.failed}/{self.judged} gates passed")
        return "\n".join(lines)


# --- reading the artifact leniently ----------------------------------------------------------


@dataclass
class _Subject:
    """What the gates inspect; parts that could not be read are None with the reason noted."""

    meta: dict[str, str]
    tensors: dict[str, torch.Tensor]
    config: ModelConfig | None = None
    tokenizer_json: str | None = None
    ckpt: Checkpoint | None = None  # set when the tensors satisfy the contract
    problems: list[str] = field(default_factory=list)


def _read_native(path: Path) -> _Subject:
    meta, tensors = read_safetensors(path)
    sub = _Subject(meta=meta, tensors=tensors, tokenizer_json=meta.get(META_TOKENIZER) or None)
    try:
        sub.config = ModelConfig.from_dict(json.loads(meta[META_CONFIG]), source=f"{path}: config")
    except (KeyError, json.JSONDecodeError, ShiptwoError, TypeError, AttributeError) as exc:
        sub.problems.append(f"config unreadable ({exc})")
    if sub.config is not None and sub.tokenizer_json:
        try:
            sub.ckpt = Checkpoint(sub.config, tensors, sub.tokenizer_json, {k: meta.get(k, "") for k in PROVENANCE_KEYS},
                                  chat_template=meta.get(META_CHAT_TEMPLATE), path=path)
            sub.ckpt.build_model()
        except ShiptwoError:
            sub.ckpt = None  # the tensor contract gate names the defect
    return sub


def read_subject(path: str | Path) -> _Subject:
    """The artifact as the gates see it (native checkpoints leniently); ShiptwoError if unreadable,
    or if a release or store manifest lists it with another SHA-256."""
    path = Path(path)
    verify_recorded(path)
    kind = artifact_kind(path)
    if kind == KIND_NATIVE:
        return _read_native(path)
    ckpt = load_artifact(path)
    return _Subject(meta=ckpt.metadata(), tensors=ckpt.tensors, config=ckpt.config,
                    tokenizer_json=ckpt.tokenizer_json, ckpt=ckpt)


# --- the gates ---------------------------------------------------------------------------------


def gate_metadata(sub: _Subject) -> Gate:
    """Every required key, every architecture field, a parseable tokenizer and provenance present."""
    missing = [k for k in REQUIRED_META_KEYS if not sub.meta.get(k)]
    if sub.meta.get(META_ARCHITECTURE) and sub.meta[META_ARCHITECTURE] != ARCHITECTURE:
        missing.append(f"{META_ARCHITECTURE}={sub.meta[META_ARCHITECTURE]!r} (expected {ARCHITECTURE!r})")
    missing += sub.problems  # config or golden record present but unreadable
    if sub.tokenizer_json:
        try:
            BPETokenizer.from_json(sub.tokenizer_json)
        except ShiptwoError as exc:
            missing.append(f"{META_TOKENIZER} (invalid: {exc})")
    return Gate("metadata", not missing, len(missing), "missing or invalid: " + ", ".join(missing) if missing else "all keys present")


def gate_tensor_contract(sub: _Subject) -> Gate:
    """Exactly the tensors the config implies, each with the implied shape."""
    if sub.config is None:
        return Gate("tensor_contract", False, None, "no readable config to derive the contract from")
    expected = sub.config.tensor_shapes()
    bad = [f"missing {n}" for n in sorted(set(expected) - set(sub.tensors))]
    bad += [f"extra {n}" for n in sorted(set(sub.tensors) - set(expected))]
    bad += [f"{n} shape {tuple(sub.tensors[n].shape)} != {s}" for n, s in expected.items()
            if n in sub.tensors and tuple(sub.tensors[n].shape) != s]
    return Gate("tensor_contract", not bad, len(bad), "; ".join(bad[:5]) if bad else f"{len(expected)} tensors as implied")


def tensor_defects(tensors: dict[str, torch.Tensor], max_abs: float) -> list[str]:
    """NaN/Inf, all-zero, constant or implausibly large tensors, by name."""
    nonfinite = set(finite_defects(tensors))
    bad = []
    for name, t in sorted(tensors.items()):
        t = t.float()
        if name in nonfinite:
            bad.append(f"{name} has NaN/Inf")
        elif t.numel() and not t.any():
            bad.append(f"{name} is all zero")
        elif t.numel() > 1 and t.min() == t.max():
            bad.append(f"{name} is constant ({float(t.flatten()[0]):g})")
        elif t.numel() and t.abs().max() > max_abs:
            bad.append(f"{name} max |x| {float(t.abs().max()):.3g} > {max_abs:g}")
    return bad


def gate_tensor_statistics(sub: _Subject, cfg: QAConfig) -> Gate:
    bad = tensor_defects(sub.tensors, cfg.max_abs_weight)
    return Gate("tensor_statistics", not bad and bool(sub.tensors), len(bad),
                "; ".join(bad[:5]) if bad else f"{len(sub.tensors)} tensors finite, varied, |x| <= {cfg.max_abs_weight:g}")


def gate_tokenizer_round_trip(sub: _Subject) -> Gate:
    """encode -> decode is byte-exact on every canary string."""
    if not sub.tokenizer_json:
        return Gate("tokenizer_round_trip", False, None, "no embedded tokenizer")
    try:
        tok = BPETokenizer.from_json(sub.tokenizer_json)
    except ShiptwoError as exc:
        return Gate("tokenizer_round_trip", False, None, str(exc))
    bad = [s for s in CANARY_STRINGS if tok.decode(tok.encode(s)) != s]
    ok = len(CANARY_STRINGS) - len(bad)
    return Gate("tokenizer_round_trip", not bad, f"{ok}/{len(CANARY_STRINGS)}",
                "differs on " + ", ".join(repr(s) for s in bad) if bad else "byte-exact")


def gate_golden_output(result: GoldenResult | None, cfg: QAConfig, reason: str = "") -> Gate:
    """Share of golden prompts whose completed program passes its independent check, against the floor."""
    if result is None:
        return not_run("golden_output", reason or "model could not be built (see tensor_contract)")
    failed = [r["id"] for r in result.records if not r["passed"]]
    how = "through the chat template" if result.chat else "as completions"
    detail = (f"{result.passed}/{len(result.records)} golden programs pass their checks ({how}; floor "
              f"{cfg.golden_min_pass:.0%})" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return Gate("golden_output", bool(result.records) and result.share >= cfg.golden_min_pass,
                f"{result.passed}/{len(result.records)}", detail)


def repetition_fraction(text: str, max_period: int = 64, min_repeats: int = 3) -> float:
    """Share of `text` covered by its longest stretch that repeats one unit (period <= max_period)
    at least `min_repeats` times: ' č č č č' is 1.0, varied code is low."""
    n = len(text)
    if n == 0:
        return 0.0
    best = 0
    for p in range(1, min(max_period, n // min_repeats) + 1):
        run = 0
        for i in range(n - p):
            run = run + 1 if text[i] == text[i + p] else 0
            if run + p >= min_repeats * p:
                best = max(best, run + p)
    return best / n


def gate_no_degeneration(texts: list[str] | None, cfg: QAConfig) -> Gate:
    if not texts:
        return not_run("no_degeneration", "no outputs to inspect (model could not be built)")
    fracs = [repetition_fraction(t) for t in texts]
    worst = max(fracs)
    ok = worst <= cfg.max_repetition
    i = fracs.index(worst)
    return Gate("no_degeneration", ok, round(worst, 3),
                f"max repetition share {worst:.2f} (bound {cfg.max_repetition}) on output {texts[i][:40]!r}")


def gate_throughput(ckpt: Checkpoint | None, cfg: QAConfig) -> Gate:
    if ckpt is None:
        return not_run("throughput", "model could not be built (see tensor_contract)")
    from shiptwo.measure.bench import BenchConfig, bench_ours

    floor = cfg.min_decode_tok_s
    res = bench_ours(ckpt, BenchConfig(new_tokens=cfg.throughput_tokens, iterations=3))
    tok_s = res.decode_tok_s.median
    return Gate("throughput", tok_s >= floor, round(tok_s, 1), f"decode {tok_s:.1f} tok/s on {res.threads} thread(s) vs floor {floor:g} ({cfg.profile})")


def gate_format_parity(ckpt: Checkpoint | None, path: Path, kind: str, cfg: QAConfig, export=None,
                       golden: GoldenSet | None = None) -> Gate:
    """Unquantized weights: our logits vs llama.cpp's on an F32 GGUF export (or on the GGUF itself),
    within the F32 tolerance; `export(ckpt, out_path, dtype)` defaults to the project's exporter.
    A quantized GGUF: against its F32 reference instead (gate_quantized_parity)."""
    if ckpt is None:
        return not_run("format_parity", "model could not be built (see tensor_contract)")
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.measure.quantized import is_quantized
    from shiptwo.runtimes.llamacpp import compare_with_llamacpp

    if kind == KIND_GGUF and is_quantized(path):
        return gate_quantized_parity(path, cfg, golden or load_golden(cfg.golden))
    export = export or export_gguf
    try:
        with tempfile.TemporaryDirectory(prefix="shiptwo-qa-") as tmp:
            gguf_path = path if kind == KIND_GGUF else export(ckpt, Path(tmp) / "qa-f32.gguf", "f32")
            res = compare_with_llamacpp(ckpt, gguf_path, greedy_steps=cfg.parity_greedy_steps)
    except ShiptwoError as exc:
        return Gate("format_parity", False, None, f"GGUF export or llama.cpp load failed: {exc}")
    tol = cfg.parity_tol
    detail = f"F32: max |logit diff| {res.max_logit_diff:.2e} (tol {tol:g}), {res.greedy_steps} greedy tokens compared"
    if res.ids_mismatch or res.greedy_mismatch:
        detail += "; " + "; ".join(res.ids_mismatch + res.greedy_mismatch)[:300]
    return Gate("format_parity", res.ok(tol), float(f"{res.max_logit_diff:.3g}"), detail)


def gate_quantized_parity(path: Path, cfg: QAConfig, golden: GoldenSet) -> Gate:
    """A quantized GGUF in llama.cpp against its F32 reference in our runtime: mean KL divergence,
    top-1 agreement and unchanged golden continuations, each against its bound; no reference
    (neither given nor shipped beside it in a release) means NOT RUN, never a pass."""
    from shiptwo.measure.quantized import compare_quantized

    reference = cfg.reference or release_reference(path)
    if reference is None:
        return not_run("format_parity", f"{path.name} is quantized and has no F32 reference "
                                         "(give --reference, or run qa on the file inside its release)")
    try:
        ref = load_artifact(reference)
        res = compare_quantized(ref, path, golden, cfg.quant_golden_tokens)
    except ShiptwoError as exc:
        return Gate("format_parity", False, None, f"comparison with reference {reference} failed: {exc}")
    misses = []
    if not res.mean_kl <= cfg.quant_max_kl:  # NaN is outside every bound
        misses.append("KL")
    if not res.top1_agreement >= cfg.quant_min_top1:
        misses.append("top-1")
    if not res.golden_unchanged >= cfg.quant_min_golden_unchanged:
        misses.append("golden")
    if not res.tokenizer_agrees:
        misses.append("tokenizer")
    detail = (f"vs {reference}: mean KL {res.mean_kl:.2e} (max {cfg.quant_max_kl:g}), top-1 {res.top1_agreement:.1%} "
              f"(min {cfg.quant_min_top1:.0%}) over {res.positions} positions, golden unchanged "
              f"{res.golden_unchanged:.0%} over {res.golden_tokens} greedy tokens (min {cfg.quant_min_golden_unchanged:.0%})"
              + ("" if res.tokenizer_agrees else "; llama.cpp tokenizes the reference text differently")
              + (f"; outside: {', '.join(misses)}" if misses else ""))
    return Gate("format_parity", not misses, float(f"{res.mean_kl:.3g}"), detail)


def run_qa(path: str | Path, cfg: QAConfig) -> QAReport:
    """Run all eight gates on the artifact at `path`; ShiptwoError only when it cannot be read."""
    path = Path(path)
    sub = read_subject(path)
    kind = artifact_kind(path)
    golden = load_golden(cfg.golden)
    report = QAReport(artifact=str(path), kind=kind, profile=cfg.profile,
                      golden_prompts={"path": str(golden.path), "sha256": sha256_file(golden.path)})
    report.gates += [gate_metadata(sub), gate_tensor_contract(sub), gate_tensor_statistics(sub, cfg), gate_tokenizer_round_trip(sub)]
    texts = None
    if sub.ckpt is not None:
        try:
            judged = judge_golden(sub.ckpt, golden)
            prompts = {p.id: p.prompt for p in golden.prompts}
            report.golden = [{"id": r["id"], "prompt": prompts[r["id"]], "completion": r["completion"], "passed": r["passed"]}
                             for r in judged.records]
            report.gates.append(gate_golden_output(judged, cfg))
        except ShiptwoError as exc:  # e.g. a golden prompt longer than the model's context
            report.gates.append(gate_golden_output(None, cfg, str(exc)))
        # the canaries as the model is served: a chat model through its template (raw code makes an
        # instruct model ramble, which says nothing about the shipped artifact)
        prompts = served_prompts(sub.ckpt, golden, list(CANARY_PROMPTS))
        outs = generate_batch(sub.ckpt.build_model(), sub.ckpt.tokenizer(), prompts, SamplingConfig(max_new_tokens=QA_DEGENERATION_TOKENS))
        texts = [o.text for o in outs]
    else:
        report.gates.append(gate_golden_output(None, cfg))
    report.gates.append(gate_no_degeneration(texts, cfg))
    report.gates.append(gate_throughput(sub.ckpt, cfg))
    report.gates.append(gate_format_parity(sub.ckpt, path, kind, cfg, golden=golden))
    return report
