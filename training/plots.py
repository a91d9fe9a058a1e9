"""Training curves as a PNG: loss on the left, accuracies on the right."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: Path, title: str = ""):
    """history: metrics rows with epoch, train_loss, val_loss, train_acc, val_acc, test_acc."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for key in ("train_acc", "val_acc", "test_acc"):
        if all(r[key] is None for r in history):     # a split without labelled steps
            continue
        ax_acc.plot(epochs, [float("nan") if r[key] is None else 100 * r[key]
                             for r in history], label=key.replace("_acc", ""))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
