"""The report's markdown filters: untrusted text made literal the way GitHub honours it."""

from __future__ import annotations

import pytest

from shiptwo.harness.markdown_text import ZERO_WIDTH_SPACE as ZW
from shiptwo.harness.markdown_text import cell, code, text


@pytest.mark.parametrize("raw, literal", [
    ("@octocat", f"@{ZW}octocat"),                      # a backslash does not stop a mention; a zero-width space does
    ("cc @org/team.", f"cc @{ZW}org/team."),
    ("a@b.io", f"a@{ZW}b.io"),                          # e-mail autolink and `user@sha` commit references
    ("#12 (#3)", f"#{ZW}12 (#{ZW}3)"),
    ("owner/repo#34", f"owner/repo#{ZW}34"),            # preceded by a word character: still a reference on GitHub
    ("GH-56 gh-7", f"GH{ZW}-56 gh{ZW}-7"),
    ("# heading #x", "# heading #x"),                    # a `#` before no digit links nothing
    ("https://e.example ftp://f", f"https:{ZW}//e.example ftp:{ZW}//f"),
    ("www.e.example _www.e.example WWW.E", f"www{ZW}.e.example \\_www{ZW}.e.example WWW{ZW}.E"),
    ("*b* **s** ~x~ ~~y~~", "\\*b\\* \\*\\*s\\*\\* \\~x\\~ \\~\\~y\\~\\~"),
    ("_i_ __s__ x_ _y", "\\_i\\_ \\_\\_s\\_\\_ x\\_ \\_y"),
    ("train_log a__b é_ü 1_2", "train_log a__b é_ü 1_2"),  # intraword: no emphasis possible, left as written
    ("a*_b_*", "a\\*\\_b\\_\\*"),
    ("$\\color{red}{PASS}$ $$x$$", "\\$\\\\color{red}{PASS}\\$ \\$\\$x\\$\\$"),  # GitHub renders $..$ as math
    ("R&D <b> [x](y) `c` a|b\nnext", "R&amp;D &lt;b> \\[x\\](y) \\`c\\` a\\|b next"),
])
def test_text_makes_github_markup_literal(raw, literal):
    assert text(raw) == literal


def test_text_leaves_plain_prose_alone():
    plain = "AC-G2-002: measured 0.04 D/N vs threshold >= 20 (profile default) — not met"
    assert text(plain) == plain


def test_code_and_cell_unchanged_in_kind():
    """A code span already shows mentions, links and emphasis literally; a trusted cell only needs its pipes."""
    assert code("@a *b* https://c") == "`@a *b* https://c`" and code("a`b|c") == "``a`b\\|c``"
    assert cell("a|b\nc") == "a\\|b c"


RLO, PDF, RLI, PDI, LRM = "\u202e", "\u202c", "\u2067", "\u2069", "\u200e"


@pytest.mark.parametrize("render", [text, cell, code])
def test_bidi_controls_show_as_code_points_not_reorder_the_text(render):
    """A right-to-left override in a results-file message shows `LIAF` as FAIL and `SSAP` as PASS; an
    isolate carries text past what follows it. No filter passes one: each shows as its code point."""
    forged = f"FAIL {RLO}SSAP{PDF} {RLI}x{PDI} a{LRM}b \u202a\u202b\u202d\u2066\u2068\u061c\u200f"
    shown = render(forged)
    assert not set(shown) & {chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
    for point in ("202E", "202C", "2067", "2069", "200E", "202A", "202B", "202D", "2066", "2068", "061C", "200F"):
        assert f"U+{point}" in shown, (point, shown)
    assert "SSAP" in shown and "FAIL" in shown  # the characters as written, in their order

