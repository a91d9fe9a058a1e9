"""Loss and accuracy of a network on a labelled split, in batches, without gradients."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def loss_and_correct(logits: torch.Tensor, y: torch.Tensor):
    """logits [B, n] with y [B], or [B, T, n] with y [B, T] (-100 = no label).
    Returns (mean loss, number correct, number labelled)."""
    flat_logits, flat_y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_y, ignore_index=IGNORE)
    mask = flat_y != IGNORE
    correct = (flat_logits.argmax(-1)[mask] == flat_y[mask]).sum()
    return loss, int(correct), int(mask.sum())


@torch.no_grad()
def evaluate(net, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
             lengths: torch.Tensor | None = None) -> dict:
    """{'loss': mean loss over labels, 'acc': accuracy in [0, 1], 'n': labels counted}.
    lengths (int [N], optional): each sequence's own steps (variable-length tasks). A split
    without a labelled step (per-step labels all -100) has no accuracy: 'acc' is None."""
    was_training = net.training
    net.eval()
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if lengths is None:
            logits = net(xb)
        else:
            lb = lengths[i:i + batch_size]
            T = int(lb.max())
            xb, yb = xb[:, :T], (yb[:, :T] if yb.ndim == 2 else yb)
            logits = net(xb, lb)
        loss, c, n = loss_and_correct(logits, yb)
        total_loss += float(loss) * n
        correct, count = correct + c, count + n
    net.train(was_training)
    return {"loss": total_loss / max(count, 1), "acc": accuracy(correct, count), "n": count}


def accuracy(correct: int, labelled: int) -> float | None:
    """correct / labelled, or None when nothing was labelled (no accuracy to report)."""
    return correct / labelled if labelled else None


def percent(acc: float | None, digits: int = 2) -> str:
    """An accuracy as text: '93.33%', or 'n/a (no labelled steps)' for None."""
    return "n/a (no labelled steps)" if acc is None else f"{100 * acc:.{digits}f}%"
