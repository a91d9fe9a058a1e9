"""Feed the device a task's raw 8-bit codes instead of its normalised values.

A task that normalises 8-bit codes itself (MNIST pixels: x = p / 127.5 - 1) declares
TaskData.raw_input = (a, b), x = a * p + b. Its 256 normalised values sit half a step off any
int8 grid that holds 0 exactly (as TFLite's asymmetric grids must): on [-1, 1] with scale
2 / 255 they fall midway between grid points, 0.5 LSB off each, and rounding merges 17 pairs
of them. The raw codes 0..255 calibrate to scale 1, zero point -128: every code exact, and
the int8 input is simply p - 128, what a sensor or camera hands the MCU anyway.

to_raw_units(net, data) folds x = a * p + b into the network as its input normalisation,
(p - mean) / std with std = 1 / a, mean = -b / a, marked fold_norm, so the converter folds it
into the encoder (convert/spec.py), and maps the data's splits to the codes. The network
computes the same function of the same inputs.

Why folded here, while tasks with input statistics normalise on the device before quantising
(convert/input_norm.py): normalising first would give the graph the normalised values back,
half a step off the grid again. The codes are exact integers with no offset to hide a signal
under and a = 1 / 127.5 is a benign scale for the encoder rows, so folding loses nothing here.
"""
from __future__ import annotations

import torch

from mgrade_edge.convert.metadata import StepMetadata

INPUT_UNITS = "raw 8-bit codes 0..255 (the task's normalisation folded into the encoder)"


def takes_codes(metadata: dict | StepMetadata) -> bool:
    """Whether a converted model's metadata says its input is the raw codes."""
    return StepMetadata.of(metadata).input_units == INPUT_UNITS


def to_raw_units(net, data) -> bool:
    """If `data` declares raw_input and `net` has no input normalisation of its own: give `net`
    the normalisation x = a * p + b and replace data.x_train / x_val / x_test ([N, T, C]
    float32, normalised) by their codes p (float32 integers 0..255). Returns whether it did."""
    if data.raw_input is None or getattr(net, "normalizes", False):
        return False
    a, b = (float(v) for v in data.raw_input)
    if not a > 0:
        raise ValueError(f"raw_input scale must be > 0, got {a}")
    C = data.n_in
    ref = net.encoder.weight if hasattr(net.encoder, "weight") else next(net.parameters())
    net.register_buffer("input_mean", torch.full((C,), -b / a, dtype=ref.dtype),
                        persistent=False)
    net.register_buffer("input_std", torch.full((C,), 1.0 / a, dtype=ref.dtype),
                        persistent=False)
    net.normalizes = True
    net.fold_norm = True
    for split in ("train", "val", "test"):
        x = getattr(data, f"x_{split}")
        codes = torch.round((x.double() - b) / a).clamp_(0, 255).float()
        setattr(data, f"x_{split}", codes)
    return True
