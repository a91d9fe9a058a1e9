"""Memory report: what a network needs at inference, per layer and in total.

    python -m mgrade_edge.training.memory CONFIG.toml|CHECKPOINT [--json]

Parameters are the inference values: weights, biases, norm affines (BatchNorm folds to a
per-channel scale and shift) and the integer delays; learned positions are training-only.
State is what the streaming step carries from one frame to the next. The current frame (delay
0) is computed in the step itself and is not state, so a ring for delays up to D holds D past
frames (t-1 .. t-D), exactly what the generated C package allocates (layout: training/ring_layout.py):
  - delay buffer, plain: (K - 1) frames x H channels (any delay 0 .. K-1 possible);
  - delay buffer, trimmed (hardened checkpoints): per channel c, R_c = its largest delay
    frames (0 for a channel whose taps all sit at delay 0), sum_c R_c bytes in int8;
  - minGRU state: H values; readout accumulator: n_classes values.
Bytes: fp32 = 4 per value. int8 = 1 per weight, norm value and state value, 4 per bias and
per accumulator value (int32, as TFLite stores them), DELAY_BYTES = 2 per delay (uint16_t, as
the C package stores them whatever the span). Not counted: the package's per-channel ring
layout tables (R_c and offsets) and its step counter.
"""
from __future__ import annotations

if __name__ == "__main__":        # Ctrl-C (it only reads): one line, exit 130
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("no report", hard=True)

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mgrade_edge.training.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a TOML config or a checkpoint (file or run folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--harden", action="store_true",
                   help="round a checkpoint's positions first (report trimmed buffers)")
    p.add_argument("--quiet", action="store_true",
                   help="accepted like every CLI's; this one prints only its report anyway")
    return p


if __name__ == "__main__":
    build_parser().parse_args()   # --help and usage errors answer before torch loads
    from mgrade_edge.training.console import require
    require("torch", "numpy", command="-m mgrade_edge.training.memory")

import torch.nn as nn  # noqa: E402

from mgrade_edge.training.config import ConfigError, load_config  # noqa: E402
from mgrade_edge.training.layers import BatchNormChannels, MGradeBlock  # noqa: E402
from mgrade_edge.training.model import MGradeNet  # noqa: E402

from mgrade_edge.training import ring_layout  # noqa: E402

DELAY_BYTES = ring_layout.DELAY_BYTES      # the C package stores every delay as uint16_t


def _linear(layer) -> dict:
    if not isinstance(layer, nn.Linear):
        return {"weights": 0, "biases": 0}
    return {"weights": layer.weight.numel(),
            "biases": layer.bias.numel() if layer.bias is not None else 0}


def _norm_values(norm) -> int:
    if isinstance(norm, (BatchNormChannels, nn.LayerNorm)):
        return 2 * norm.num_features if isinstance(norm, BatchNormChannels) \
            else 2 * norm.normalized_shape[0]
    return 0


def _sum(*parts: dict) -> dict:
    out = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def block_counts(block: MGradeBlock, span: int) -> dict:
    """Value counts of one block: weights, biases, norm values, delays, state."""
    H = block.fc1.in_features
    c = _sum(_linear(block.fc1), _linear(block.fc2))
    c["norm"] = _norm_values(block.norm_mlp) + _norm_values(block.norm_post)
    c["delays"] = c["conv_taps"] = c["ring_plain"] = c["ring_trimmed"] = c["rnn_state"] = 0
    if block.conv is not None:
        conv = block.conv
        c["conv_taps"] = conv.weight.numel()
        c["delays"] = conv.weight.numel()
        c["ring_plain"] = ring_layout.plain_frames(span, None) * H
        c["ring_trimmed"] = ring_layout.trimmed_bytes(conv.delays().cpu().numpy())
    if block.rnn is not None:
        c = _sum(c, _linear(block.rnn.proj))
        c["rnn_state"] = H
    return c


def bytes_of(c: dict, trimmed: bool) -> dict:
    ring = c["ring_trimmed"] if trimmed else c["ring_plain"]
    params = c["weights"] + c["conv_taps"] + c["biases"] + c["norm"]
    state = ring + c["rnn_state"] + c.get("acc", 0)
    int8_params = c["weights"] + c["conv_taps"] + 4 * c["biases"] + c["norm"] + \
        DELAY_BYTES * c["delays"]
    int8_state = ring + c["rnn_state"] + 4 * c.get("acc", 0)
    return {"param_values": params + c["delays"], "state_values": state,
            "fp32_bytes": 4 * (params + c["delays"] + state),
            "int8_bytes": int8_params + int8_state,
            "fp32_param_bytes": 4 * (params + c["delays"]), "int8_param_bytes": int8_params,
            "fp32_state_bytes": 4 * state, "int8_state_bytes": int8_state}


def memory_report(net: MGradeNet) -> dict:
    """Per-layer and total counts and bytes; 'trimmed' figures only for hardened delays."""
    span = net.cfg.span
    layers = [{"name": "encoder", **_linear(net.encoder)}]
    layers += [{"name": f"block{i}", **block_counts(b, span)} for i, b in enumerate(net.blocks)]
    layers.append({"name": "readout", **_linear(net.readout), "acc": net.n_classes})
    keys = ("weights", "biases", "norm", "delays", "conv_taps", "ring_plain", "ring_trimmed",
            "rnn_state", "acc")
    for layer in layers:
        for k in keys:
            layer.setdefault(k, 0)
    total = _sum(*[{k: layer[k] for k in keys} for layer in layers])
    hardened = net.hardened and bool(net.delay_convs())
    report = {"train_params": net.n_params(), "span": span, "hardened": hardened,
              "layers": [], "total": {"counts": total,
                                      "plain": bytes_of(total, trimmed=False)}}
    for layer in layers:
        row = {"name": layer["name"], "counts": {k: layer[k] for k in keys},
               "plain": bytes_of(layer, trimmed=False)}
        if hardened:
            row["trimmed"] = bytes_of(layer, trimmed=True)
        report["layers"].append(row)
    if hardened:
        report["total"]["trimmed"] = bytes_of(total, trimmed=True)
    return report


def format_report(rep: dict) -> str:
    lines = [f"training parameters: {rep['train_params']}   span K = {rep['span']}   "
             f"hardened: {rep['hardened']}",
             f"{'layer':<9}{'params':>8}{'state':>8}{'ring K':>8}{'ring trim':>10}"
             f"{'fp32 B':>9}{'int8 B':>9}" + (f"{'int8 B trim':>12}" if rep["hardened"] else "")]
    for row in rep["layers"] + [{"name": "total", **rep["total"]}]:
        c, p = row["counts"], row["plain"]
        line = (f"{row['name']:<9}{p['param_values']:>8}{p['state_values']:>8}"
                f"{c['ring_plain']:>8}{c['ring_trimmed'] if rep['hardened'] else '-':>10}"
                f"{p['fp32_bytes']:>9}{p['int8_bytes']:>9}")
        if rep["hardened"]:
            line += f"{row['trimmed']['int8_bytes']:>12}"
        lines.append(line)
    t = rep["total"]
    lines.append(f"footprint (params + state): fp32 {t['plain']['fp32_bytes']} B, "
                 f"int8 {t['plain']['int8_bytes']} B"
                 + (f", int8 with trimmed rings {t['trimmed']['int8_bytes']} B "
                    f"({t['plain']['int8_bytes'] - t['trimmed']['int8_bytes']} B saved)"
                    if rep["hardened"] else ""))
    return "\n".join(lines)


def load_net(path: str) -> MGradeNet:
    """A network from a checkpoint (with its learned delays) or from a TOML config."""
    if path.endswith(".toml"):
        from mgrade_edge.training.checkpoint import build_model
        from mgrade_edge.training.tasks import load_task, task_shape

        cfg = load_config(path)
        try:
            info = task_shape(cfg.task.name, cfg.task.params)
        except NotImplementedError:
            data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None,
                             cfg.task.seed)
            info = {"n_in": data.n_in, "n_classes": data.n_classes, "readout": data.readout}
        return build_model(cfg, info)
    from mgrade_edge.training.checkpoint import load_model

    return load_model(path)[0]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mgrade_edge.training.checkpoint import CheckpointError
    from mgrade_edge.training.tasks import TaskError

    try:
        net = load_net(args.source)
    except (ConfigError, TaskError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.harden:
        net.harden()
    rep = memory_report(net)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
