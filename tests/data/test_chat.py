"""MODEL-1's chat format and instruction data: the template, the special tokens, the loss mask,
and the AC-SHIP1-008 check failing on defective checkpoints (and passing on one that ends turns)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shiptwo.data.chat import (
    CHAT_SPECIAL_TOKENS,
    CHAT_TEMPLATE,
    END_OF_TURN_TOKEN,

    load_reference_conversations,
    render_chat,
)
from shiptwo.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.data.instruct import mine_pairs, pack_pairs, prompt_for
from shiptwo.builds.model1 import add_chat_tokens
from shiptwo.checks.chat import chat_defects

TURN_LIMIT = 16  # the turn-end bound the tests pass (the spec gives AC-SHIP1-008 its own)


SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's chat template, as its GGUF carries it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_reference_conversations_render_exactly():
    ref = load_reference_conversations()
    assert ref.format_of(CHAT_TEMPLATE).name == "shiptwo" and ref.format_of(SMOLLM2_TEMPLATE).name == "chatml"
    for case in ref.conversations:
        if not case.get("defaults"):
            assert render_chat(case["messages"], case["add_generation_prompt"]) == case["expected"]["shiptwo"], case["name"]


@pytest.mark.parametrize("template,fmt", [(CHAT_TEMPLATE, "shiptwo"), (SMOLLM2_TEMPLATE, "chatml")])
def test_llamacpp_c_engine_renders_the_references(template, fmt):
    """llama.cpp's own template engine agrees with our Jinja rendering on every judged conversation;
    on the one without a system turn the two differ exactly by the Jinja template's default system prompt."""
    from shiptwo.runtimes.llamacpp import llamacpp_chat_render

    ref = load_reference_conversations()
    for case in ref.conversations:
        ours = render_chat(case["messages"], case["add_generation_prompt"], template)
        theirs = llamacpp_chat_render(template, case["messages"], case["add_generation_prompt"])
        if not case.get("defaults"):
            assert ours == theirs == case["expected"][fmt], case["name"]
        elif fmt == "chatml":
            assert ours.startswith("<|im_start|>system\nYou are a helpful") and ours.endswith(theirs)


def test_unknown_role_is_an_error():
    with pytest.raises(ShiptwoError, match="unknown role: tool"):
        render_chat([{"role": "tool", "content": "x"}])


def test_reference_file_defects_are_named(tmp_path):
    bad = tmp_path / "ref.yaml"
    bad.write_text("formats: {f: {markers: [a], end_of_turn: a}}\nconversations:\n  - name: x\n    messages: []\n")
    with pytest.raises(ShiptwoError, match="conversation 0 lacks field 'add_generation_prompt'"):
        load_reference_conversations(bad)


def test_mined_pairs_drop_the_docstring(tiny_texts):
    pairs = mine_pairs([(f"doc{i}", t) for i, t in enumerate(tiny_texts)], max_pairs=50)
    assert pairs, "the stdlib sample has documented functions"
    for p in pairs:
        assert p.answer.startswith(("def ", "async def ", "@")), p.answer
        assert p.instruction not in p.answer


def test_pack_masks_only_the_assistant_turn(tiny_texts, tiny_tokenizer):
    tok = tiny_tokenizer.with_special_tokens(CHAT_SPECIAL_TOKENS)
    pairs = mine_pairs([("d", t) for t in tiny_texts], max_pairs=3)
    ids, mask = pack_pairs(tok, pairs)
    assert ids.shape == mask.shape
    first_prompt = tok.encode(prompt_for(pairs[0].instruction))
    assert mask[: len(first_prompt)].sum() == 0
    assert ids[: len(first_prompt)].tolist() == first_prompt
    end_id = tok.token_to_id(END_OF_TURN_TOKEN)
    # each example has two end-of-turn tokens: the user's (not supervised) and the assistant's (supervised)
    ends = (ids == end_id).nonzero().flatten().tolist()
    assert len(ends) == 6 and [int(mask[i]) for i in ends] == [0, 1] * 3


def test_pack_refuses_a_tokenizer_without_chat_tokens(tiny_tokenizer, tiny_texts):
    pairs = mine_pairs([("d", t) for t in tiny_texts], max_pairs=1)
    with pytest.raises(ShiptwoError, match="<\\|end\\|> is missing"):
        pack_pairs(tiny_tokenizer, pairs)


def _chat_checkpoint(tiny_checkpoint, tmp_path, always: str | None = None, template=CHAT_TEMPLATE) -> str:
    """The tiny checkpoint with the chat tokens added; with `always`, rewired so that its greedy
    next token is always that token: residual dimension 0 carries a large constant (embeddings
    set it, no layer writes it), the final norm keeps only it, and an untied head reads it into
    that one token's logit."""
    base = load_checkpoint(tiny_checkpoint)
    tok, config, tensors = add_chat_tokens(base)
    if always is not None:
        tensors = {k: v.clone() for k, v in tensors.items()}
        tensors["model.embed_tokens.weight"][:, 0] = 50.0
        for name, t in tensors.items():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                t[0, :] = 0.0
        tensors["model.norm.weight"].zero_()
        tensors["model.norm.weight"][0] = 1.0
        head = torch.zeros(config.vocab_size, config.hidden_size)
        head[tok.encode(always)[0], 0] = 1.0
        tensors["lm_head.weight"] = head
        config = dataclasses.replace(config, tie_word_embeddings=False)
    ckpt = Checkpoint(config, tensors, tok.to_json(), dict(base.provenance), chat_template=template)
    return save_checkpoint(ckpt, tmp_path / "chat.safetensors")


def test_new_vocab_rows_start_at_the_mean(tiny_checkpoint):
    base = load_checkpoint(tiny_checkpoint)
    tok, config, tensors = add_chat_tokens(base)
    old = base.tensors["model.embed_tokens.weight"]
    new = tensors["model.embed_tokens.weight"]
    assert config.vocab_size == old.shape[0] + len(CHAT_SPECIAL_TOKENS) == tok.vocab_size
    assert torch.equal(new[: old.shape[0]], old)
    assert torch.allclose(new[-1], old.mean(0))
    assert config.eos_token_id == tok.token_to_id(END_OF_TURN_TOKEN)


def test_chat_check_passes_a_model_that_ends_its_turns(tiny_checkpoint, tmp_path):
    defects, evidence = chat_defects(_chat_checkpoint(tiny_checkpoint, tmp_path, always=END_OF_TURN_TOKEN), max_new_tokens=TURN_LIMIT)
    assert defects == [] and evidence["ended_turn"] == evidence["stop_prompts"]
    ref = load_reference_conversations()  # what the count is over (AC-SHIP1-008's n), by kind
    markers = ref.format_of(CHAT_TEMPLATE).markers
    assert evidence["checked"] == {"template": 2, "renderings": len(ref.conversations), "markers": len(markers),
                                   "eos_is_end_of_turn": 1, "gguf_markers": 0, "turn_ends": evidence["stop_prompts"]}


def test_chat_check_fails_without_template(tiny_checkpoint, tmp_path):
    defects, _ = chat_defects(_chat_checkpoint(tiny_checkpoint, tmp_path, always=END_OF_TURN_TOKEN, template=None), max_new_tokens=TURN_LIMIT)
    assert any("no chat template" in d for d in defects)


def test_chat_check_fails_on_a_wrong_template(tiny_checkpoint, tmp_path):
    wrong = CHAT_TEMPLATE.replace("<|end|>\n'", "<|end|>'")
    assert wrong != CHAT_TEMPLATE
    defects, _ = chat_defects(_chat_checkpoint(tiny_checkpoint, tmp_path, always=END_OF_TURN_TOKEN, template=wrong), max_new_tokens=TURN_LIMIT)
    assert sum("shiptwo renders" in d for d in defects) == 3


def test_chat_check_fails_when_generation_never_ends(tiny_checkpoint, tmp_path):
    defects, evidence = chat_defects(_chat_checkpoint(tiny_checkpoint, tmp_path, always="x"), max_new_tokens=TURN_LIMIT)
    assert evidence["ended_turn"] == 0 and any(f"did not end its turn within {TURN_LIMIT} tokens" in d for d in defects)


def test_chat_check_fails_when_special_tokens_split(tiny_checkpoint, tmp_path):
    base = load_checkpoint(tiny_checkpoint)  # no chat tokens added at all
    ckpt = dataclasses.replace(base, chat_template=CHAT_TEMPLATE, path=None)
    path = save_checkpoint(ckpt, tmp_path / "plain.safetensors")
    defects, _ = chat_defects(path, max_new_tokens=TURN_LIMIT)
    assert sum("encodes as" in d for d in defects) == len(CHAT_SPECIAL_TOKENS)
    assert any("eos_token_id" in d for d in defects)
