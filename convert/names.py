"""Names of the streaming step graph's inputs and outputs (the .tflite signature, the
metadata's "inputs"/"outputs" lists, the Python and C streamers' state keys).

    x          int8 [1, n_in]      the frame at step t                      (input)
    logits     int8 [1, n_classes] the step's logits                        (output)
    ring<l>    int8 [1, R*H]       layer l's past frames, slot (t-d) mod R  (input)
    idx<l>     int32 [N*H]         layer l's gather indices at t            (input)
    frame<l>   int8 [1, H]         layer l's conv input at t (into the ring) (output)
    h<l>       int8 [1, H]         layer l's minGRU state                   (input)
    hnew<l>    int8 [1, H]         layer l's next minGRU state              (output)
"""
from __future__ import annotations

import re

X = "x"
LOGITS = "logits"
KINDS = ("ring", "idx", "frame", "h", "hnew")


def ring(layer: int) -> str:
    return f"ring{layer}"


def idx(layer: int) -> str:
    return f"idx{layer}"


def frame(layer: int) -> str:
    return f"frame{layer}"


def h(layer: int) -> str:
    return f"h{layer}"


def hnew(layer: int) -> str:
    return f"hnew{layer}"


def parse(name: str) -> tuple[str, int] | None:
    """("hnew", 3) for "hnew3"; None for x, logits and foreign names."""
    m = re.fullmatch(r"(ring|idx|frame|hnew|h)(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else None


def step_io(layers) -> tuple[list[str], list[str]]:
    """Input and output names in graph order; layers: per layer (has a ring, has a minGRU)."""
    inputs, outputs = [X], [LOGITS]
    for i, (has_ring, has_rnn) in enumerate(layers):
        if has_ring:
            inputs += [ring(i), idx(i)]
            outputs.append(frame(i))
        if has_rnn:
            inputs.append(h(i))
            outputs.append(hnew(i))
    return inputs, outputs


def state_pairs(layers) -> list[tuple[str, str]]:
    """(input, output) of every state fed back each step; layers as in step_io."""
    pairs = []
    for i, (has_ring, has_rnn) in enumerate(layers):
        if has_ring:
            pairs.append((ring(i), frame(i)))
        if has_rnn:
            pairs.append((h(i), hnew(i)))
    return pairs


def meta_layers(layers: list[dict]) -> list[tuple[bool, bool]]:
    """step_io's per-layer flags from the metadata's "layers" list."""
    return [(lm["ring_frames"] > 0, bool(lm["rnn"])) for lm in layers]
