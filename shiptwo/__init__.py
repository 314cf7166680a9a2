"""shiptwo: spec-as-code acceptance criteria for shipping two language models."""

__version__ = "0.1.0"
