"""MODEL-1's chat format: role and end-of-turn special tokens and the Jinja chat template.

The template is rendered the way transformers renders `chat_template` (a sandboxed Jinja
environment with trim_blocks/lstrip_blocks), so our rendering, the HF export's
`apply_chat_template` and the GGUF's `tokenizer.chat_template` all mean the same string.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shiptwo.errors import ShiptwoError

SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_OF_TURN_TOKEN = "<|end|>"
CHAT_SPECIAL_TOKENS = (SYSTEM_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, END_OF_TURN_TOKEN)
ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

REFERENCE_CONVERSATIONS = "spec/chat-reference.yaml"


def _raise_exception(message: str):
    raise TemplateError(message)


def render_chat(messages: list[dict], add_generation_prompt: bool = False, template: str = CHAT_TEMPLATE) -> str:
    """Render a conversation with the chat template, as transformers' apply_chat_template does."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:
        raise ShiptwoError(f"chat template: {exc}") from None


def load_reference_conversations(path: str | Path = REFERENCE_CONVERSATIONS) -> list[dict]:
    """The reference conversations and their exact expected renderings (AC-SHIP1-008)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ShiptwoError(f"{path}: cannot read reference conversations ({exc})") from None
    cases = (data or {}).get("conversations")
    if not isinstance(cases, list) or not cases:
        raise ShiptwoError(f"{path}: field 'conversations' must be a non-empty list")
    for i, case in enumerate(cases):
        for key in ("name", "messages", "add_generation_prompt", "expected"):
            if key not in case:
                raise ShiptwoError(f"{path}: conversation {i} lacks field '{key}'")
    return cases


