"""Tiny random hardened models (tests/tiny_model.py) through the whole chain in seconds:
spec -> calibration -> int8 .tflite -> fused C package -> host gcc, every step's int8 logits
and states 0 LSB from TFLite-Micro, on the portable and the fast (DSP-in-C) path, over
several shapes: H, layers, span, taps, conv-only, minGRU-only, a ring-less layer, delays past
the uint8 range, per-step and mean readouts."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.tiny_model import CONFIGS, host_diff, reference_steps

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]


@pytest.fixture(scope="module")
def packages(tiny_models, tmp_path_factory):
    """cfg -> (model folder, package folder, x, logits, states, generate() summary)."""
    from mgrade_edge.convert.codegen import generate

    work = tmp_path_factory.mktemp("tiny_pkg")
    done = {}

    def get(cfg):
        if cfg not in done:
            folder = tiny_models(cfg)
            model = (folder / "model.tflite").read_bytes()
            x = np.load(folder / "test_data.npz")["x"]
            logits, states = reference_steps(model, x)
            info = generate(model, work / cfg.name)
            done[cfg] = (folder, work / cfg.name, x, logits, states, info)
        return done[cfg]
    return get


@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
def test_tiny_package_bit_exact_with_tflm(packages, cfg, fast, tmp_path):
    folder, gen, x, logits, states, _ = packages(cfg)
    # the reference is not degenerate: the logits take many values over the steps
    assert len(np.unique(logits)) >= 20, np.unique(logits)
    d_logits, d_states = host_diff(gen, tmp_path, x, logits, states, fast)
    assert (d_logits, d_states) == (0, 0), \
        f"{cfg.name} ({'fast' if fast else 'portable'}): logits {d_logits} LSB, states {d_states}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
def test_tiny_package_is_fused(packages, cfg):
    """Every delay conv and minGRU became its fused call (no interpreter-only op left), with
    the fast variants under MG_FAST; the state outputs the runner prints are the layer kinds'."""
    folder, gen, x, logits, states, info = packages(cfg)
    assert info["kind"] == "mgrade"
    src = (gen / "mg_model.c").read_text()
    for fn, present in (("mg_delay_step_s8", cfg.conv), ("mg_delay_fast_s8", cfg.conv),
                        ("mg_mingru_step_s8", cfg.rnn), ("mg_mingru_fast_s8", cfg.rnn)):
        assert (fn in src) == present, f"{fn} {'missing' if present else 'unexpected'}"
    for fn in ("mg_gather", "mg_concatenation", "mg_logistic_s8"):
        assert fn not in src, f"{fn} left in the fused package"
    # the depthwise convs left are the post-norms between layers (1x1), fast: mg_fscale_s8
    assert src.count("mg_depthwise_conv_s8(") == src.count("mg_fscale_s8(") == cfg.L - 1
    # state outputs per step: frame (H) of each layer with a ring, h (H) of each minGRU
    rings = sum(1 for i in range(cfg.L) if cfg.conv and i != cfg.zero_delay_layer)
    assert states.shape[2] == cfg.H * (rings + (cfg.L if cfg.rnn else 0))
