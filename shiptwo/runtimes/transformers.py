"""Backend parity on the Hugging Face export: our runtime vs transformers (an independent LLaMA
implementation), and our runtime on CPU vs on an accelerator when one exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from shiptwo import stats
from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError

from shiptwo.model.canaries import CANARY_PROMPTS




@dataclass
class TransformersParity:
    """Measured differences; `accelerator` says what the CPU-vs-accelerator leg ran on (or why not)."""

    max_logit_diff: float
    token_id_mismatches: list[str] = field(default_factory=list)
    accelerator: str = ""
    max_accelerator_diff: float | None = None
    per_prompt: list[dict] = field(default_factory=list)  # prompt, max_logit_diff, ids_match

    def evidence(self) -> dict:
        return {
            "max_abs_logit_diff_transformers": self.max_logit_diff,
            "token_id_mismatches": self.token_id_mismatches,
            "accelerator": self.accelerator,
            "max_abs_logit_diff_cpu_vs_accelerator": self.max_accelerator_diff,
        }


def load_transformers(hf_dir: str | Path):
    """(model, tokenizer) from a local directory, offline, F32, eval mode."""
    import transformers

    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True, dtype=torch.float32)
        tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ShiptwoError(f"{hf_dir}: transformers cannot load it ({str(exc).splitlines()[0]})") from None
    return model.eval(), tok


@torch.inference_mode()
def compare_with_transformers(ckpt: Checkpoint, hf_dir: str | Path, prompts=CANARY_PROMPTS) -> TransformersParity:
    """Max |logit| difference over every position of `prompts`, plus tokenizer id agreement."""
    ours, tok = ckpt.build_model(), ckpt.tokenizer()
    theirs, hf_tok = load_transformers(hf_dir)
    result = TransformersParity(max_logit_diff=0.0)
    batches = []
    for prompt in prompts:
        ids = tok.encode(prompt)
        hf_ids = hf_tok(prompt, add_special_tokens=False)["input_ids"]
        if hf_ids != ids:
            result.token_id_mismatches.append(f"{prompt!r}: ours {ids[:8]}... transformers {hf_ids[:8]}...")
        x = torch.tensor([ids])
        a = ours(x)
        b = theirs(x).logits
        diff = float((a - b).abs().max())
        result.max_logit_diff = stats.extreme([result.max_logit_diff, diff])  # a NaN stays NaN
        result.per_prompt.append({"prompt": prompt, "max_logit_diff": diff, "ids_match": hf_ids == ids})
        batches.append((x, a))
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        result.accelerator = torch.cuda.get_device_name(dev)
        ours_gpu = ckpt.build_model().to(dev)
        result.max_accelerator_diff = stats.extreme([float((ours_gpu(x.to(dev)).cpu() - a).abs().max()) for x, a in batches])
    else:
        result.accelerator = "none: torch.cuda.is_available() is False, CPU-vs-accelerator leg not run"
    return result
