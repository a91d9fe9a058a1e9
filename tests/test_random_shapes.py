"""Device accuracy on shapes nobody tuned (issue 30): tiny mGRADE models of random shapes
(layers, width, span, taps, norm, MLP ratio; fixed seeds) trained for a few epochs on the
repo's own long-sequence task (flipflop: a bit held for hundreds of steps plus a bit read at
two short delays, per-step labels), converted with the converter's defaults (GPTQ weights,
--form auto judged on the validation split) and streamed with TFLite-Micro's arithmetic (the
host C package, cross-checked against TFLite-Micro) over held-out test sequences.

Bound: the device is within BOUND_POINTS of the float (hardened) network's accuracy on the
test split's labelled steps. (--form auto's own target is 0.5 points on the validation split;
the test split is other sequences, so the bound leaves room for the split's noise.)
"""
from __future__ import annotations

import numpy as np
import pytest

BOUND_POINTS = 1.0
N_SHAPES = 3
TASK = {"seq_len": 128, "n_train": 512, "n_val": 64, "n_test": 64, "gap_min": 30,
        "gap_max": 90, "far": 24, "d1": 1, "d2": 3}


def random_shapes(n: int, seed: int = 30) -> list[dict]:
    """n model shapes drawn from a fixed-seed generator."""
    rng = np.random.default_rng(seed)
    return [{"n_layers": int(rng.integers(1, 4)), "d_model": int(rng.choice([8, 12, 16])),
             "kernel_span": int(rng.integers(6, 33)), "n_taps": int(rng.integers(2, 5)),
             "norm": str(rng.choice(["batch", "none"])), "mlp_ratio": int(rng.integers(1, 3)),
             "seed": int(rng.integers(0, 1000))} for _ in range(n)]


def _config(shape: dict) -> str:
    task = "\n".join(f"{k} = {v}" for k, v in TASK.items())
    return f"""[task]
name = "flipflop"
seed = {shape['seed']}
{task}

[model]
d_model = {shape['d_model']}
n_layers = {shape['n_layers']}
kernel_span = {shape['kernel_span']}
n_taps = {shape['n_taps']}
norm = "{shape['norm']}"
mlp_ratio = {shape['mlp_ratio']}

[train]
epochs = 10
batch_size = 32
lr = 1e-2
weight_decay = 0.01
seed = {shape['seed']}
threads = 1
"""


@pytest.mark.parametrize("shape", random_shapes(N_SHAPES),
                         ids=lambda s: "L{n_layers}-H{d_model}-K{kernel_span}-N{n_taps}-"
                                       "{norm}-r{mlp_ratio}".format(**s))
def test_default_conversion_holds_on_a_random_shape(shape, tmp_path):
    from mgrade_edge.convert import ladder
    from mgrade_edge.convert.__main__ import (calibration_feeds, choose_rounding,
                                              round_weights)
    from mgrade_edge.convert.quantize import convert_int8
    from mgrade_edge.convert.spec import extract
    from mgrade_edge.convert.stream import Streamer
    from mgrade_edge.training.checkpoint import load_model
    from mgrade_edge.training.evaluate import evaluate
    from mgrade_edge.training.tasks import load_task
    from mgrade_edge.training.train import main as train_main

    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(_config(shape))
    assert train_main([str(cfg_path), "--out", str(tmp_path / "run")]) == 0
    net, cfg, _ = load_model(str(tmp_path / "run"))
    data = load_task(cfg.task.name, cfg.task.params, None, cfg.task.seed)
    net.harden()
    float_acc = evaluate(net, data.x_test, data.y_test)["acc"]
    spec = extract(net)
    round_weights(net, spec, data, 64, cfg.train.seed, choose_rounding("auto", cfg))
    raw = convert_int8(spec, calibration_feeds(net, spec, data.x_train, 64, cfg.train.seed))
    float_val = ladder.float_val_accuracy(net, data, 300)
    model, rep = ladder.choose(raw, spec, {}, data, 300, float_val, measure_cost=False)
    xq = Streamer(model, "tflm").quantize_input(data.x_test.numpy())
    device = ladder.val_accuracy(model, xq, data.y_test.numpy(), data.readout, None)
    print(f"{shape}: float {100 * float_acc:.2f}%, device {100 * device:.2f}% "
          f"({rep['form']}; val float {100 * float_val:.2f}%, tried "
          f"{[(t['form'], round(100 * t['val_acc'], 2)) for t in rep['forms_tried']]})")
    assert float_acc > 0.4                         # it learned (4 classes, chance 0.25-0.3)
    assert device >= float_acc - BOUND_POINTS / 100
