"""The generated C package of a .tflite, built with host gcc and compared with TFLite-Micro
step by step (shared by the int16-form tests)."""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert.stream import Streamer
from tests.test_state16 import _inputs


def package_matches_tflm(model: bytes, tmp_path, fast: bool) -> str:
    """The generated package, built with host gcc (portable or fast path), equals the TFLM
    reference on every step's logits and state copies of 5 random sequences (0 LSB); returns
    mg_model.c's text for the caller's kernel checks."""
    from benchmarks import mcu_cost as mc

    d = tmp_path / "model"
    d.mkdir()
    (d / "model.tflite").write_bytes(model)
    s = Streamer(model, "tflm")
    x = np.stack([s.quantize_input(v.numpy()) for v in _inputs(5, 50, 11)])
    np.savez(d / "test_data.npz", x=x, y=np.zeros(len(x), np.int64))
    info = mc.generate(d, tmp_path / "gen", 5)
    exe = mc.build_host_runner(tmp_path / "gen", tmp_path / "runner", fast=fast)
    got = mc.run_host_runner(exe, info["ref"]["x"])
    expect = np.concatenate([info["ref"]["logits"], info["ref"]["states"]], axis=2)
    np.testing.assert_array_equal(got, expect)
    return (tmp_path / "gen" / "mg_model.c").read_text()
