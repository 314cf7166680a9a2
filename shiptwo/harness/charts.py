"""Mermaid `xychart-beta` blocks for the report: they render in a GitHub comment, a local PNG does not.

Two charts: the training loss curve (train loss averaged over each evaluation window, validation
loss at each evaluation) read from a trainer's step log, and pass rates with their 95% intervals.
Each is capped at MAX_POINTS categories so the report stays well under GitHub's comment limit.
"""

from __future__ import annotations

import json
from pathlib import Path

from shiptwo.errors import ShiptwoError

MAX_POINTS = 40  # categories per chart: enough to see a curve's shape, small enough for a comment
MERMAID_FENCE = "```mermaid"
# overlaid bars, drawn in order: upper bound (pale), figure (dark), lower bound (light)
INTERVAL_PALETTE = '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "#deebf7, #2171b5, #9ecae1"}}}}%%'
LINE_PALETTE = '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "#2171b5, #e6550d"}}}}%%'  # train, validation


def read_train_log(path: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, val) as (step, loss) lists from a trainer's JSONL step log (entries typed train|val)."""
    path = Path(path)
    train, val = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShiptwoError(f"{path}: cannot read the train log ({getattr(exc, 'strerror', None) or exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            if e.get("type") == "train":
                train.append((int(e["step"]), float(e["loss"])))
            elif e.get("type") == "val":
                val.append((int(e["step"]), float(e["val_loss"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ShiptwoError(f"{path}:{n}: not a train-log entry (type, step, loss / val_loss)") from None
    return train, val


def _pick(items: list, k: int = MAX_POINTS) -> list:
    """At most k items spread evenly, always keeping the last."""
    if len(items) <= k:
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _num(x: float) -> str:
    return f"{x:.4g}"


def _quote(text: str) -> str:
    """A Mermaid label in double quotes; a quote, backtick or line break inside (a results file's text
    can reach a label) would end the label, the chart line or the ``` fence, so each becomes harmless."""
    text = str(text).replace('"', "'").replace("`", "'").replace("\r", " ").replace("\n", " ")
    return '"' + text.replace("<", "&lt;") + '"'


def _axis_range(values: list[float], floor_zero: bool = True) -> str:
    lo = 0.0 if floor_zero else min(values)
    hi = max(values)
    pad = (hi - lo) * 0.05 or 1.0
    return f"{_num(lo if floor_zero else lo - pad)} --> {_num(hi + pad)}"


def loss_chart(train: list[tuple[int, float]], val: list[tuple[int, float]], title: str) -> str:
    """A Mermaid line chart of the loss curve; '' when the log holds no step.

    With validation entries the x axis is the evaluation steps and the train line is the mean train
    loss over each window since the previous evaluation; without, it is evenly picked train steps."""
    if not train and not val:
        return ""
    steps = [s for s, _ in _pick(val)] if val else [s for s, _ in _pick(train)]
    val_at = dict(val)
    train_line, prev = [], -1
    for step in steps:
        window = [loss for s, loss in train if prev < s <= step]
        before = [loss for s, loss in train if s <= step]
        train_line.append(sum(window) / len(window) if window else before[-1] if before else None)
        prev = step
    keep = [i for i, v in enumerate(train_line) if v is not None or not train]  # a val before any train step
    steps = [steps[i] for i in keep]
    lines = []
    if train:
        lines.append(("train (window mean)", [train_line[i] for i in keep]))
    if val:
        lines.append(("validation", [val_at[s] for s in steps]))
    values = [v for _, ys in lines for v in ys]
    out = [MERMAID_FENCE, LINE_PALETTE, "xychart-beta", f"    title {_quote(title)}",
           f"    x-axis \"optimizer step\" [{', '.join(str(s) for s in steps)}]",
           f"    y-axis \"cross-entropy (nats/token)\" {_axis_range(values)}"]
    out += [f"    line [{', '.join(_num(v) for v in ys)}]" for _, ys in lines]
    out.append("```")
    legend = " and ".join(f"{colour}: {name}" for colour, (name, _) in zip(("blue", "orange"), lines))
    return "\n".join(out) + f"\n\n{legend}; {len(train)} train and {len(val)} validation entries in the log.\n"


def pass_rate_chart(rows: list[dict], title: str = "Pass rates with 95% intervals") -> str:
    """Overlaid bars per figure (rows: {id, value, lo, hi, n} in %): a pale bar to the upper 95% bound,
    a dark one to the figure, a light base to the lower bound, so the interval is the banded top."""
    rows = _pick(rows)
    if not rows:
        return ""
    labels = ", ".join(_quote(f"{r['id']} (n={r['n']})") for r in rows)
    out = [MERMAID_FENCE, INTERVAL_PALETTE, "xychart-beta", f"    title {_quote(title)}", f"    x-axis [{labels}]",
           "    y-axis \"%\" 0 --> 100"]
    out += [f"    bar [{', '.join(_num(r[key]) for r in rows)}]" for key in ("hi", "value", "lo")]
    out.append("```")
    return ("\n".join(out) + "\n\nEach bar: the light base ends at the lower 95% bound, the dark band at the measured "
            "pass rate, the pale band at the upper 95% bound.\n")
