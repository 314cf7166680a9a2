"""Text made literal for GitHub-flavored markdown: the report's `cell`, `text` and `code` filters.

The report is pasted into pull requests. Untrusted text (messages, skip reasons, evidence, results-file
fields; model output and model-file strings reach them) must show as what it is: it may not open HTML,
links, images, code spans, emphasis or math, start a heading, row or fence, nor make GitHub ping a person, link
an issue or turn a bare address into a live link, nor reorder what is shown (a right-to-left override makes
`LIAF` read as FAIL, an isolate carries `PASS` past the cell's real text). Each rule below is the one GitHub
honours: CommonMark's backslash escapes for its own punctuation, and a zero-width space where GitHub acts on text after
markdown (mentions, issue references, extended autolinks), since a backslash does not stop those.
"""

from __future__ import annotations

import re

# Written as the entity, not the bare character: the raw file shows where text was broken, nothing
# invisible hides in it, and GitHub renders it as U+200B (nothing seen, no mention or link matched).
ZERO_WIDTH_SPACE = "&#8203;"

# Unicode's Bidi_Control characters (embeddings, overrides, isolates, marks): a browser lays text out by them,
# so one in a cell can show characters in another order than they are written (U+202E shows `SSAP` as PASS).
# Each is replaced by its code point, visible: no filter may pass one, trusted text included.
BIDI_CONTROLS = frozenset(chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)))
_BIDI = {ord(c): f"(U+{ord(c):04X})" for c in BIDI_CONTROLS}

# No HTML (tags, `<!--` comments), no links or images, no code spans, no emphasis or strikethrough, no
# math (GitHub renders `$...$` and `$$...$$` with MathJax: colour, size, any text), no line break to
# start a heading, row or fence; `>` stays, it is only markup at a line start.
_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "&": "&amp;", "<": "&lt;", "[": "\\[", "]": "\\]", "`": "\\`",
                               "|": "\\|", "*": "\\*", "~": "\\~", "$": "\\$", "\n": " ", "\r": " "})

# Where GitHub links or pings after markdown, each broken by a zero-width space after the match:
# `@name` and `@org/team` mentions, `user@sha` commits and e-mail autolinks (every `@`); `#123` and
# `owner/repo#123` (a `#` before a digit); `GH-123`; `http://`, `https://`, `ftp://` autolinks (`:`
# before `//`); `www.` autolinks. Broken wherever they occur, word boundary or not: GitHub's rules for
# what may precede them differ (`_www.` links), and a zero-width space where none was needed costs nothing.
_GITHUB_LINKS = re.compile(r"@|#(?=\d)|(?i:gh)(?=-\d)|:(?=//)|(?i:www)(?=\.)")

# A run of `_` between two letters or digits can neither open nor close emphasis (CommonMark's
# flanking rules), so `train_log` stays as written; any other run is escaped.
_UNDERSCORES = re.compile(r"_+")


def visible(value) -> str:
    """`value` as a string with every bidirectional control shown as `(U+XXXX)`: what it says is
    what it shows, in the order it is written."""
    return str(value).translate(_BIDI)


def cell(value) -> str:
    """A trusted value (the spec's titles, units, thresholds) made safe inside a GitHub table cell."""
    return visible(value).replace("|", "\\|").replace("\n", " ")


def _underscores(match: re.Match) -> str:
    text, start, end = match.string, match.start(), match.end()
    intraword = start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return match.group() if intraword else match.group().replace("_", "\\_")


def text(value) -> str:
    """Untrusted text as literal markdown text, safe in a table cell, list item or `<details>` block."""
    escaped = _UNDERSCORES.sub(_underscores, visible(value).translate(_TEXT_ESCAPES))
    return _GITHUB_LINKS.sub(lambda m: m.group() + ZERO_WIDTH_SPACE, escaped)


def code(value) -> str:
    """Untrusted text (a commit, path, hash) as one inline code span: fenced by a backtick run longer
    than any inside it, so it cannot close early; pipes escaped and line breaks flattened for tables.
    Inside a code span GitHub neither emphasises, links nor mentions."""
    body = visible(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"
