"""Checkpoints: one file holding weights, config, optimiser, schedule, RNG state and progress.

Everything in it is a tensor, a number, a string, a list or a dict, so it loads with
`torch.load(..., weights_only=True)`. Writes are atomic (temp file + fsync + rename): a run
killed while saving keeps its previous checkpoint. A checkpoint is written only when every
floating-point tensor in it (weights, buffers, optimiser state) is finite.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from mgrade_edge.training.config import Config, ConfigError, config_from_dict
from mgrade_edge.training.model import MGradeNet

FORMAT = "mgrade-edge/checkpoint/v1"
# keys every checkpoint holds, and the ones `--resume` needs on top
REQUIRED_KEYS = ("format", "config", "task_info", "model")
RESUME_KEYS = ("optimizer", "epoch", "batch", "step", "epochs", "running", "rng", "history")
# test hook (tests/test_robustness.py): "BYTES:MARKER" makes the next checkpoint write stop
# after BYTES bytes, create the file MARKER and sleep, so a test can kill it mid-write
STALL_ENV = "MGRADE_TEST_STALL_CKPT_WRITE"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or of another architecture."""


class NonFiniteError(CheckpointError):
    """Weights or optimiser state hold NaN or inf."""


def non_finite(obj, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested dict/list that hold NaN or inf."""
    bad = []
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "tensor")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += non_finite(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += non_finite(v, f"{prefix}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        bad.append(prefix or "value")
    return bad


def check_finite(obj, what: str):
    """Raise NonFiniteError naming (up to 3 of) the non-finite tensors of `obj`."""
    bad = non_finite(obj)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteError(f"{what} holds NaN or inf values (in {', '.join(bad[:3])}{more})")


class _StallingWriter:
    """File wrapper for the STALL_ENV test hook: stops for good after `limit` bytes."""

    def __init__(self, f, limit: int, marker: str):
        self.f, self.limit, self.marker, self.written = f, limit, marker, 0

    def write(self, data) -> int:
        n = self.f.write(data)
        self.written += n
        if self.written >= self.limit:
            self.f.flush()
            os.fsync(self.f.fileno())
            Path(self.marker).write_text(str(self.written))
            while True:                        # wait for the test's SIGKILL
                time.sleep(1)
        return n

    def flush(self):
        self.f.flush()


def _stall_hook():
    spec = os.environ.pop(STALL_ENV, "")
    if not spec:
        return None
    limit, marker = spec.split(":", 1)
    return int(limit), marker


def save_atomic(obj: dict, path: Path):
    """Write `obj` to `path` via a temp file + fsync + rename; refuses non-finite tensors."""
    path = Path(path)
    check_finite({k: obj[k] for k in ("model", "optimizer") if k in obj}, "the model to save")
    tmp = path.with_name(path.name + ".tmp")
    stall = _stall_hook()
    with open(tmp, "wb") as f:
        torch.save(obj, _StallingWriter(f, *stall) if stall else f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)                       # the rename itself reaches the disk
    finally:
        os.close(dir_fd)


def load_raw(path, resume: bool = False) -> dict:
    """Load and sanity-check a checkpoint file (no model built). resume: also require the
    optimiser and progress entries that `--resume` needs."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint; use another "
                              f"checkpoint or train again")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        detail = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}"
                              f"{': ' + detail if detail else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mgrade-edge checkpoint (expected format "
                              f"{FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS + (RESUME_KEYS if resume else ()) if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it has no {', '.join(missing)} "
                              f"(damaged or written by another tool); use another checkpoint")
    for key, kind in (("config", dict), ("task_info", dict), ("model", dict)):
        if not isinstance(ckpt[key], kind):
            raise CheckpointError(f"{path}: '{key}' is not a {kind.__name__}; damaged checkpoint")
    return ckpt


def check_task_data(task_info: dict, data, checkpoint) -> None:
    """Refuse task data (a TaskData) whose shape is not the one the checkpoint's network was
    built for: its data file changed since training (channels, classes, readout)."""
    for key, what in (("n_in", "channels"), ("n_classes", "classes"), ("readout", "readout")):
        have, want = getattr(data, key), task_info.get(key)
        if have != want:
            raise CheckpointError(f"{checkpoint} was trained on data with {what} {want}, but "
                                  f"the task's data now have {have}: its data file changed "
                                  f"since training; restore it or train again")


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
    try:
        net = build_model(cfg, ckpt["task_info"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint task_info is damaged ({type(e).__name__}: {e})") \
            from None
    check_architecture(net, ckpt["model"])
    net.load_state_dict(ckpt["model"])
    return net.eval(), cfg, ckpt


def check_architecture(net: MGradeNet, state_dict: dict):
    """Refuse weights whose names or shapes do not match `net`."""
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None
              for k, v in state_dict.items()}
    if own != theirs:
        missing = sorted(set(own) - set(theirs))[:3]
        extra = sorted(set(theirs) - set(own))[:3]
        shapes = [k for k in set(own) & set(theirs) if own[k] != theirs[k]][:3]
        raise CheckpointError("checkpoint is from another architecture: "
                              f"missing {missing}, unexpected {extra}, shape mismatch {shapes}")
