"""`shiptwo qa`: eight pass/fail gates on a model artifact, each with the figure it measured.

A checkpoint that trains fine can still be unusable downstream (background, lesson 2), so each
gate checks one thing a consumer relies on: metadata, tensor contract, tensor statistics,
tokenizer round-trip, golden outputs, no degeneration, throughput and GGUF format parity.
A native checkpoint is read leniently here, so a missing piece fails its gate instead of
stopping the whole run; only an unreadable file is an error (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from shiptwo.formats.artifact import KIND_GGUF, KIND_NATIVE, artifact_kind, load_artifact
from shiptwo.model.checkpoint import Checkpoint, read_safetensors_metadata
from shiptwo.errors import ShiptwoError
from shiptwo.model.generate import SamplingConfig, generate_ids
from shiptwo.model.llama import ModelConfig
from shiptwo.model.tokenizer import BPETokenizer

from shiptwo.model.canaries import CANARY_PROMPTS, CANARY_STRINGS
from shiptwo.model.checkpoint import ARCHITECTURE, META_ARCHITECTURE, META_CONFIG, META_GOLDEN, META_TOKENIZER, PROVENANCE_KEYS, REQUIRED_META_KEYS
from shiptwo.paths import DEFAULT_PROFILE

QA_DEGENERATION_TOKENS = 64  # greedy tokens inspected when no golden outputs are recorded
QA_REPORT_FILE = "qa-report.json"


GATES = (
    "metadata", "tensor_contract", "tensor_statistics", "tokenizer_round_trip",
    "golden_output", "no_degeneration", "throughput", "format_parity",
)


@dataclass
class QAConfig:
    """Bounds the gates apply. The throughput floor and the parity tolerance are passed in by the caller
    (the acceptance test or the CLI, from the spec): qa never looks a threshold up itself."""

    min_decode_tok_s: float  # throughput floor
    parity_tol: float  # max |logit diff| ours vs llama.cpp on an F32 GGUF
    profile: str = DEFAULT_PROFILE
    max_abs_weight: float = 1e4  # a trained weight beyond this is implausible (diverged or corrupt)
    max_repetition: float = 0.5  # share of an output taken by one repeating loop
    throughput_tokens: int = 64


@dataclass
class Gate:
    name: str
    passed: bool
    figure: float | int | str | None
    detail: str = ""


@dataclass
class QAReport:
    artifact: str
    kind: str
    profile: str
    gates: list[Gate] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not g.passed for g in self.gates)

    @property
    def passed(self) -> bool:
        return self.failed == 0 and len(self.gates) == len(GATES)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "kind": self.kind, "profile": self.profile,
                "failed_gates": self.failed, "gates": [dataclasses.asdict(g) for g in self.gates]}

    def to_text(self) -> str:
        lines = [f"qa {self.artifact} ({self.kind}, profile {self.profile})"]
        for n, g in enumerate(self.gates, 1):
            lines.append(f"  {n}. {g.name:<22} {'PASS' if g.passed else 'FAIL'}  {g.figure}  {g.detail}".rstrip())
        lines.append(f"{len(self.gates) - self.failed}/{len(self.gates)} gates passed")
        return "\n".join(lines)


# --- reading the artifact leniently ----------------------------------------------------------


@dataclass
class _Subject:
    """What the gates inspect; parts that could not be read are None with the reason noted."""

    meta: dict[str, str]
    tensors: dict[str, torch.Tensor]
    config: ModelConfig | None = None
    tokenizer_json: str | None = None
    golden: dict | None = None
    ckpt: Checkpoint | None = None  # set when the tensors satisfy the contract
    problems: list[str] = field(default_factory=list)


def _read_native(path: Path) -> _Subject:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    meta = read_safetensors_metadata(data, path)
    try:
        tensors = st_load(data)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise ShiptwoError(f"{path}: corrupt tensor data ({str(exc).splitlines()[0]})") from None
    sub = _Subject(meta=meta, tensors=tensors, tokenizer_json=meta.get(META_TOKENIZER) or None)
    try:
        sub.config = ModelConfig.from_dict(json.loads(meta[META_CONFIG]), source=f"{path}: config")
    except (KeyError, json.JSONDecodeError, ShiptwoError, TypeError, AttributeError) as exc:
        sub.problems.append(f"config unreadable ({exc})")
    if meta.get(META_GOLDEN):
        try:
            sub.golden = json.loads(meta[META_GOLDEN])
        except json.JSONDecodeError:
            sub.problems.append(f"{META_GOLDEN} is not valid JSON")
    if sub.config is not None and sub.tokenizer_json:
        try:
            sub.ckpt = Checkpoint(sub.config, tensors, sub.tokenizer_json,
                                  {k: meta.get(k, "") for k in PROVENANCE_KEYS}, golden=sub.golden, path=path)
            sub.ckpt.build_model()
        except ShiptwoError:
            sub.ckpt = None  # the tensor contract gate names the defect
    return sub


def read_subject(path: str | Path) -> _Subject:
    """The artifact as the gates see it (native checkpoints leniently); ShiptwoError if unreadable."""
    path = Path(path)
    kind = artifact_kind(path)
    if kind == KIND_NATIVE:
        return _read_native(path)
    ckpt = load_artifact(path)
    return _Subject(meta=ckpt.metadata(), tensors=ckpt.tensors, config=ckpt.config,
                    tokenizer_json=ckpt.tokenizer_json, golden=ckpt.golden, ckpt=ckpt)


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
    bad = []
    for name, t in sorted(tensors.items()):
        t = t.float()
        if not torch.isfinite(t).all():
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


def golden_runs(ckpt: Checkpoint, golden: dict) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy outputs on the golden prompts, twice, with the golden's own sampling settings."""
    model = ckpt.build_model()
    scfg = SamplingConfig(**golden["sampling"])
    runs = []
    for _ in range(2):
        runs.append([generate_ids(model, list(p), scfg) for p in golden["prompt_ids"]])
    return runs[0], runs[1]


def gate_golden_output(sub: _Subject, outputs: tuple[list[list[int]], list[list[int]]] | None) -> Gate:
    if sub.golden is None:
        return Gate("golden_output", False, None, "no (readable) golden outputs recorded in the checkpoint")
    if outputs is None:
        return Gate("golden_output", False, None, "model could not be built (see tensor_contract)")
    first, second = outputs
    expected = sub.golden["output_ids"]
    same = sum(a == b == e for a, b, e in zip(first, second, expected))
    detail = []
    if first != second:
        detail.append("two greedy runs differ")
    if first != expected:
        detail.append(f"{sum(a != e for a, e in zip(first, expected))} output(s) differ from the recorded golden")
    ok = not detail and len(expected) == len(first) > 0
    return Gate("golden_output", ok, f"{same}/{len(expected)}", "; ".join(detail) or "deterministic and equal to golden")


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
        return Gate("no_degeneration", False, None, "no outputs to inspect (model could not be built or no golden prompts)")
    fracs = [repetition_fraction(t) for t in texts]
    worst = max(fracs)
    ok = worst <= cfg.max_repetition
    i = fracs.index(worst)
    return Gate("no_degeneration", ok, round(worst, 3),
                f"max repetition share {worst:.2f} (bound {cfg.max_repetition}) on output {texts[i][:40]!r}")


def gate_throughput(ckpt: Checkpoint | None, cfg: QAConfig) -> Gate:
    if ckpt is None:
        return Gate("throughput", False, None, "model could not be built (see tensor_contract)")
    from shiptwo.measure.bench import BenchConfig, bench_ours

    floor = cfg.min_decode_tok_s
    res = bench_ours(ckpt, BenchConfig(new_tokens=cfg.throughput_tokens, iterations=3))
    tok_s = res.decode_tok_s.median
    return Gate("throughput", tok_s >= floor, round(tok_s, 1), f"decode {tok_s:.1f} tok/s on {res.threads} thread(s) vs floor {floor:g} ({cfg.profile})")


def gate_format_parity(ckpt: Checkpoint | None, path: Path, kind: str, cfg: QAConfig, export=None) -> Gate:
    """Our logits vs llama.cpp's on an F32 GGUF export (or on the GGUF itself when that is the
    artifact); `export(ckpt, out_path, dtype)` defaults to the project's GGUF exporter."""
    if ckpt is None:
        return Gate("format_parity", False, None, "model could not be built (see tensor_contract)")
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.runtimes.llamacpp import compare_with_llamacpp

    export = export or export_gguf
    try:
        with tempfile.TemporaryDirectory(prefix="shiptwo-qa-") as tmp:
            gguf_path = path if kind == KIND_GGUF else export(ckpt, Path(tmp) / "qa-f32.gguf", "f32")
            res = compare_with_llamacpp(ckpt, gguf_path)
    except ShiptwoError as exc:
        return Gate("format_parity", False, None, f"GGUF export or llama.cpp load failed: {exc}")
    tol = cfg.parity_tol
    detail = f"max |logit diff| {res.max_logit_diff:.2e} (tol {tol:g})"
    if res.ids_mismatch or res.greedy_mismatch:
        detail += "; " + "; ".join(res.ids_mismatch + res.greedy_mismatch)[:300]
    return Gate("format_parity", res.ok(tol), float(f"{res.max_logit_diff:.3g}"), detail)


def run_qa(path: str | Path, cfg: QAConfig) -> QAReport:
    """Run all eight gates on the artifact at `path`; ShiptwoError only when it cannot be read."""
    path = Path(path)
    kind = artifact_kind(path)
    sub = read_subject(path)
    report = QAReport(artifact=str(path), kind=kind, profile=cfg.profile)
    report.gates += [gate_metadata(sub), gate_tensor_contract(sub), gate_tensor_statistics(sub, cfg), gate_tokenizer_round_trip(sub)]
    outputs = texts = None
    golden_error = None
    if sub.ckpt is not None and sub.golden is not None:
        try:
            outputs = golden_runs(sub.ckpt, sub.golden)
        except (KeyError, TypeError, ShiptwoError) as exc:
            golden_error = f"golden record unusable ({type(exc).__name__}: {exc})"
    if outputs is not None:
        tok = sub.ckpt.tokenizer()
        texts = [tok.decode(ids) for ids in outputs[0]]
    elif sub.ckpt is not None:  # no golden: still inspect greedy outputs on the canary prompts
        model, tok = sub.ckpt.build_model(), sub.ckpt.tokenizer()
        texts = [tok.decode(generate_ids(model, tok.encode(p), SamplingConfig(max_new_tokens=QA_DEGENERATION_TOKENS)))
                 for p in CANARY_PROMPTS]
    report.gates.append(gate_golden_output(sub, outputs) if golden_error is None else Gate("golden_output", False, None, golden_error))
    report.gates.append(gate_no_degeneration(texts, cfg))
    report.gates.append(gate_throughput(sub.ckpt, cfg))
    report.gates.append(gate_format_parity(sub.ckpt, path, kind, cfg))
    return report
