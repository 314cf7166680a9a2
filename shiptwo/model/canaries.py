"""Canary prompts and strings: fixed inputs every runtime and check feeds a model."""

from __future__ import annotations

# Canary prompts and strings shared by qa, parity checks and benchmarks.
CANARY_PROMPTS = (
    "def fibonacci(n):\n",
    "import os\n\n\ndef read_file(path):\n",
    "class Stack:\n    def __init__(self):\n",
    "for i in range(10):\n",
)
CANARY_STRINGS = (
    "def f(x):\n    return x + 1\n",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n",
    "unicode: héllo wörld — ∑ π ≈ 3.14 中文 🚀",
    "",
    "<|endoftext|> is special",
)

