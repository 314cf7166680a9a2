"""Acceptance metric on a chat model: the template renders the reference conversations, the
special tokens are single ids, and generation ends its turn."""

from __future__ import annotations

from pathlib import Path

import yaml

from shiptwo.errors import ShiptwoError

from shiptwo.data.chat import (
    CHAT_SPECIAL_TOKENS, CHAT_TEMPLATE, END_OF_TURN_TOKEN, REFERENCE_CONVERSATIONS, load_reference_conversations,
    render_chat,
)


CHAT_MAX_NEW_TOKENS = 192  # an answer that has not ended its turn by then is a stop failure


def chat_defects(checkpoint, reference=REFERENCE_CONVERSATIONS, hf_dir=None, gguf=None) -> tuple[list[str], dict]:
    """AC-SHIP1-008: every way the chat format of a checkpoint (and its HF / GGUF exports) is broken.

    The template embedded in the checkpoint must render each reference conversation exactly (and
    so must transformers' apply_chat_template on the HF export); each special token must be one
    id (in our tokenizer and in llama.cpp's); greedy generation after each reference prompt and
    each `stop_prompts` instruction must end its turn with the end-of-turn token.
    """
    from shiptwo.model.checkpoint import load_checkpoint
    from shiptwo.model.generate import FINISH_EOS, SamplingConfig, generate_batch

    ckpt = load_checkpoint(checkpoint)
    cases = load_reference_conversations(reference)
    defects: list[str] = []
    evidence: dict = {}
    template = ckpt.chat_template
    if not template:
        defects.append(f"{checkpoint}: no chat template embedded")
        template = CHAT_TEMPLATE  # still check the tokens and stopping
    for case in cases:
        got = render_chat(case["messages"], case["add_generation_prompt"], template)
        if got != case["expected"]:
            defects.append(f"template renders {case['name']!r} as {got!r}")
    tok = ckpt.tokenizer()
    for token in CHAT_SPECIAL_TOKENS:
        ids = tok.encode(token)
        if len(ids) != 1:
            defects.append(f"special token {token} encodes as {len(ids)} ids {ids}")
    end_id = tok.token_to_id(END_OF_TURN_TOKEN)
    if end_id is None or ckpt.config.eos_token_id != end_id:
        defects.append(f"config eos_token_id {ckpt.config.eos_token_id} is not the end-of-turn id {end_id}")
    if hf_dir is not None:
        defects += _hf_template_defects(hf_dir, cases)
    if gguf is not None:
        defects += _gguf_token_defects(gguf, tok)
    prompts = [render_chat(c["messages"], True, template) for c in cases if c["add_generation_prompt"]]
    prompts += [render_chat([{"role": "user", "content": p}], True, template) for p in _stop_prompts(reference)]
    outs = generate_batch(ckpt.build_model(), tok, prompts, SamplingConfig(max_new_tokens=CHAT_MAX_NEW_TOKENS))
    not_ended = [i for i, o in enumerate(outs) if o.finish_reason != FINISH_EOS]
    for i in not_ended:
        defects.append(f"generation after prompt {i} did not end its turn within {CHAT_MAX_NEW_TOKENS} tokens")
    evidence.update({"stop_prompts": len(prompts), "ended_turn": len(prompts) - len(not_ended),
                     "sample_answer": outs[0].text[:300] if outs else ""})
    return defects, evidence


def _stop_prompts(reference) -> list[str]:
    data = yaml.safe_load(Path(reference).read_text(encoding="utf-8")) or {}
    prompts = data.get("stop_prompts") or []
    if not all(isinstance(p, str) and p for p in prompts):
        raise ShiptwoError(f"{reference}: field 'stop_prompts' must be a list of non-empty strings")
    return prompts


def _hf_template_defects(hf_dir, cases) -> list[str]:
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(hf_dir))
    out = []
    for case in cases:
        got = hf_tok.apply_chat_template(case["messages"], tokenize=False,
                                         add_generation_prompt=case["add_generation_prompt"])
        if got != case["expected"]:
            out.append(f"transformers renders {case['name']!r} from {hf_dir} as {got!r}")
    return out


def _gguf_token_defects(gguf, tok) -> list[str]:
    from shiptwo.runtimes.llamacpp import llamacpp_tokenize, load_llama

    llm = load_llama(gguf, n_ctx=64, logits_all=False)
    try:
        out = []
        for token in CHAT_SPECIAL_TOKENS:
            ids = llamacpp_tokenize(llm, token)
            if ids != tok.encode(token):
                out.append(f"llama.cpp tokenizes {token} in {gguf} as {ids}, ours as {tok.encode(token)}")
        return out
    finally:
        llm.close()
