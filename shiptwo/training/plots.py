"""The loss-curve PNG the report links: train loss per step and validation loss per eval."""

from __future__ import annotations

import io
from pathlib import Path

from shiptwo.fileio import atomic_write_bytes


def plot_loss_curve(log: list[dict], path: str | Path, title: str = "training loss") -> Path:
    """Render train/val loss from the step log (entries with "type" train|val) to a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log if e.get("type") == "train"]
    val = [(e["step"], e["val_loss"]) for e in log if e.get("type") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
