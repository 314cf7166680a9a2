"""Acceptance metric on a chat model: its template renders the reference conversations the same
in every renderer that will meet it, its markers are single ids, and generation ends its turn."""

from __future__ import annotations

from shiptwo.errors import ShiptwoError

from shiptwo.data.chat import CHAT_TEMPLATE, REFERENCE_CONVERSATIONS, load_reference_conversations, render_chat


def chat_defects(checkpoint, reference=REFERENCE_CONVERSATIONS, hf_dir=None, gguf=None, *,
                 max_new_tokens: int) -> tuple[list[str], dict]:
    """AC-SHIP1-008: every way the chat format of a checkpoint (and its HF / GGUF exports) is broken.

    The checkpoint's template must render each judged reference conversation to the expected
    text of its format, and so must transformers' apply_chat_template on the HF export and
    llama.cpp's C template engine on the GGUF's template; on the `defaults` conversation the
    renderers' differences are named in the evidence. Each marker must be one id (in our
    tokenizer and llama.cpp's), the end-of-turn marker must be the model's EOS, and greedy
    generation after each prompt must end its turn within `max_new_tokens` (the criterion's
    turn_end_max_tokens: an answer still going then is a stop failure). The evidence's `checked`
    counts, by kind, the items the defects were counted over (each can add at most one).
    """
    from shiptwo.model.checkpoint import load_checkpoint
    from shiptwo.model.generate import FINISH_EOS, SamplingConfig, generate_batch

    ckpt = load_checkpoint(checkpoint)
    ref = load_reference_conversations(reference)
    defects: list[str] = []
    template = ckpt.chat_template
    if not template:
        defects.append(f"{checkpoint}: no chat template embedded")
        template = CHAT_TEMPLATE  # still check the tokens and stopping
    fmt = ref.format_of(template)
    if fmt is None:
        defects.append(f"{checkpoint}: chat template matches no format of {reference} ({', '.join(ref.formats)})")
    renderers = {"shiptwo": lambda m, gen: render_chat(m, gen, template)}
    if hf_dir is not None:
        renderers["transformers"] = _transformers_renderer(hf_dir)
    if gguf is not None:
        renderers["llama.cpp"] = _llamacpp_renderer(gguf)
    named: dict[str, dict[str, str]] = {}
    for case in ref.conversations:
        got = {}
        for name, render in renderers.items():
            try:
                got[name] = render(case["messages"], case["add_generation_prompt"])
            except ShiptwoError as exc:
                defects.append(f"{name} cannot render {case['name']!r}: {exc}")
        if case.get("defaults"):
            if len(set(got.values())) > 1:
                named[case["name"]] = got
            continue
        expected = case["expected"][fmt.name] if fmt else None
        for name, text in got.items():
            if expected is not None and text != expected:
                defects.append(f"{name} renders {case['name']!r} as {text!r}, expected {expected!r}")
    tok = ckpt.tokenizer()
    markers = fmt.markers if fmt else ()
    for token in markers:
        ids = tok.encode(token)
        if len(ids) != 1:
            defects.append(f"special token {token} encodes as {len(ids)} ids {ids}")
    end_id = tok.token_to_id(fmt.end_of_turn) if fmt else None
    if fmt and (end_id is None or ckpt.config.eos_token_id != end_id):
        defects.append(f"config eos_token_id {ckpt.config.eos_token_id} is not the end-of-turn {fmt.end_of_turn} id {end_id}")
    if gguf is not None:
        defects += _gguf_token_defects(gguf, tok, markers)
    prompts = [render_chat(c["messages"], True, template) for c in ref.conversations if c["add_generation_prompt"]]
    prompts += [render_chat([{"role": "user", "content": p}], True, template) for p in ref.stop_prompts]
    outs = generate_batch(ckpt.build_model(), tok, prompts, SamplingConfig(max_new_tokens=max_new_tokens))
    not_ended = [i for i, o in enumerate(outs) if o.finish_reason != FINISH_EOS]
    for i in not_ended:
        defects.append(f"generation after prompt {i} did not end its turn within {max_new_tokens} tokens")
    checked = {"template": 2, "renderings": len(ref.conversations) * len(renderers), "markers": len(markers),
               "eos_is_end_of_turn": int(fmt is not None), "gguf_markers": len(markers) if gguf is not None else 0,
               "turn_ends": len(prompts)}
    evidence = {"format": fmt.name if fmt else None, "renderers": sorted(renderers), "checked": checked,
                "named_differences": named, "stop_prompts": len(prompts), "ended_turn": len(prompts) - len(not_ended),
                "sample_answer": outs[0].text[:300] if outs else ""}
    return defects, evidence


def _transformers_renderer(hf_dir):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(hf_dir))
    return lambda messages, gen: hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _llamacpp_renderer(gguf):
    """llama.cpp's C template engine on the template the GGUF carries (not the Jinja path)."""
    from gguf import Keys as gguf_keys

    from shiptwo.formats.gguf_load import read_gguf
    from shiptwo.runtimes.llamacpp import llamacpp_chat_render

    template = read_gguf(gguf).fields.get(gguf_keys.Tokenizer.CHAT_TEMPLATE)
    if not template:
        raise ShiptwoError(f"{gguf}: no tokenizer.chat_template")
    return lambda messages, gen: llamacpp_chat_render(template, messages, gen)


def _gguf_token_defects(gguf, tok, markers) -> list[str]:
    from shiptwo.runtimes.llamacpp import llamacpp_tokenize, load_llama

    llm = load_llama(gguf, n_ctx=64, logits_all=False)
    try:
        out = []
        for token in markers:
            ids = llamacpp_tokenize(llm, token)
            if ids != tok.encode(token):
                out.append(f"llama.cpp tokenizes {token} in {gguf} as {ids}, ours as {tok.encode(token)}")
        return out
    finally:
        llm.close()
