"""MODEL-1's chat format: role and end-of-turn special tokens and the Jinja chat template.

The template is rendered the way transformers renders `chat_template` (a sandboxed Jinja
environment with trim_blocks/lstrip_blocks), so our rendering, the HF export's
`apply_chat_template` and the GGUF's `tokenizer.chat_template` all mean the same string.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ChatFormat:
    """A chat format of the reference file: its marker tokens and the one that ends a turn."""

    name: str
    markers: tuple[str, ...]
    end_of_turn: str


@dataclass
class ChatReference:
    """The reference conversations (AC-SHIP1-008), the formats they are written for, and the
    instructions after which a model must end its turn."""

    formats: dict[str, ChatFormat]
    conversations: list[dict]
    stop_prompts: list[str]

    def format_of(self, template: str) -> ChatFormat | None:
        """The format whose markers all occur in what `template` renders of the first judged
        conversation (None if none does)."""
        case = next(c for c in self.conversations if not c.get("defaults"))
        text = render_chat(case["messages"], case["add_generation_prompt"], template)
        return next((f for f in self.formats.values() if all(m in text for m in f.markers)), None)


def load_reference_conversations(path: str | Path = REFERENCE_CONVERSATIONS) -> ChatReference:
    """The reference file, validated; every defect is one error naming the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ShiptwoError(f"{path}: cannot read reference conversations ({exc})") from None
    data = data if isinstance(data, dict) else {}
    formats = {}
    for name, f in (data.get("formats") or {}).items():
        if not isinstance(f, dict) or not f.get("markers") or f.get("end_of_turn") not in (f.get("markers") or []):
            raise ShiptwoError(f"{path}: format {name!r} needs markers and an end_of_turn among them")
        formats[name] = ChatFormat(name, tuple(f["markers"]), f["end_of_turn"])
    if not formats:
        raise ShiptwoError(f"{path}: field 'formats' must be a non-empty mapping")
    cases = data.get("conversations")
    if not isinstance(cases, list) or not any(isinstance(c, dict) and not c.get("defaults") for c in cases):
        raise ShiptwoError(f"{path}: field 'conversations' must list at least one judged conversation")
    for i, case in enumerate(cases):
        required = ("name", "messages", "add_generation_prompt") + (() if case.get("defaults") else ("expected",))
        for key in required:
            if key not in case:
                raise ShiptwoError(f"{path}: conversation {i} lacks field '{key}'")
        if not case.get("defaults") and sorted(case["expected"]) != sorted(formats):
            raise ShiptwoError(f"{path}: conversation {i}: expected needs one rendering per format ({', '.join(formats)})")
    prompts = data.get("stop_prompts") or []
    if not all(isinstance(p, str) and p for p in prompts):
        raise ShiptwoError(f"{path}: field 'stop_prompts' must be a list of non-empty strings")
    return ChatReference(formats, cases, prompts)
