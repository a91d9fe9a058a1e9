"""Checkpoints: one file holding weights, config, optimiser, schedule, RNG state and progress.

Everything in it is a tensor, a number, a string, a list or a dict, so it loads with
`torch.load(..., weights_only=True)`. Writes are atomic (temp file + rename): a run killed
while saving keeps its previous checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from training.config import Config, ConfigError, config_from_dict
from training.model import MGradeNet

FORMAT = "mgrade-edge/checkpoint/v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or of another architecture."""


def save_atomic(obj: dict, path: Path):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_raw(path) -> dict:
    """Load and sanity-check a checkpoint file (no model built)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mgrade-edge checkpoint (expected format "
                              f"{FORMAT!r})")
    return ckpt


def build_model(cfg: Config, task_info: dict) -> MGradeNet:
    return MGradeNet(cfg.model, n_in=task_info["n_in"], n_classes=task_info["n_classes"],
                     readout=task_info["readout"], input_mean=task_info.get("input_mean"),
                     input_std=task_info.get("input_std"))


def load_model(path) -> tuple[MGradeNet, Config, dict]:
    """Checkpoint -> (network in eval mode, config, raw checkpoint dict)."""
    ckpt = load_raw(path)
    try:
        cfg = config_from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config is not valid for this version: {e}") from None
    net = build_model(cfg, ckpt["task_info"])
    check_architecture(net, ckpt["model"])
    net.load_state_dict(ckpt["model"])
    return net.eval(), cfg, ckpt


def check_architecture(net: MGradeNet, state_dict: dict):
    """Refuse weights whose names or shapes do not match `net`."""
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state_dict.items()}
    if own != theirs:
        missing = sorted(set(own) - set(theirs))[:3]
        extra = sorted(set(theirs) - set(own))[:3]
        shapes = [k for k in set(own) & set(theirs) if own[k] != theirs[k]][:3]
        raise CheckpointError("checkpoint is from another architecture: "
                              f"missing {missing}, unexpected {extra}, shape mismatch {shapes}")
