"""AC-SHIP1-008: MODEL-1's chat template renders the reference conversations exactly (ours and
transformers'), its special tokens are single ids (ours and llama.cpp's), and generation stops
at end of turn."""

from __future__ import annotations

from pathlib import Path

import pytest



def _reference_path(config) -> Path:
    from shiptwo.data.chat import REFERENCE_CONVERSATIONS

    return Path(config.rootpath) / REFERENCE_CONVERSATIONS


@pytest.mark.ac("AC-SHIP1-008")
def test_chat_template_applies_cleanly(criterion, request, model1_artifacts, model1_hf_dir, model1_gguf_q8_0):
    from shiptwo.checks.chat import chat_defects
    ref = _reference_path(request.config)
    defects, evidence = chat_defects(model1_artifacts.checkpoint, ref, hf_dir=model1_hf_dir, gguf=model1_gguf_q8_0,
                                     max_new_tokens=criterion.param("turn_end_max_tokens"))
    criterion.check(len(defects), n=sum(evidence["checked"].values()), evidence={**evidence, "defects": defects, "reference": ref,
                                            "checkpoint": model1_artifacts.checkpoint})
