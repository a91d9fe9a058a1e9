"""int8 ADD and SUB parameters (convert/tflm_params.op_params, read from a real one-op .tflite)
with the kernels' arithmetic against TFLite-Micro on every input pair, over random scales and
zero points. The rare scale sets where a float- instead of double-computed multiplier rounds
differently make a wrong parameter rule fail here (SUB: 11 outputs in 300 sets)."""
from __future__ import annotations

import numpy as np
import pytest

from mgrade_edge.convert.tflm_params import _addsub
from mgrade_edge.convert.tflite_reader import read_tflite
from mgrade_edge.convert.tflm_params import op_params
from tests.tflm_probe import one_op_model, run_one_op


@pytest.mark.parametrize("op, n_sets", [("SUB", 300), ("ADD", 60)])
def test_int8_add_sub_bit_exact_with_tflm(op, n_sets):
    rng = np.random.default_rng(0)
    a, b = (v.reshape(-1) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    sign = -1 if op == "SUB" else 1
    bad = []
    for k in range(n_sets):
        s1, s2, so = (float(np.float32(10 ** rng.uniform(-3, 0))) for _ in range(3))
        z1, z2, zo = (int(rng.integers(-128, 128)) for _ in range(3))
        model = one_op_model(op, [("INT8", s1, z1), ("INT8", s2, z2)], ("INT8", so, zo), len(a))
        m = read_tflite(model)
        p = op_params(m, m.operators[0])
        want = run_one_op(model, [a, b], np.int8)
        n = int((_addsub(p, a, b, sign) != want).sum())
        if n:
            bad.append((k, (s1, s2, so, z1, z2, zo), n))
    assert not bad, f"{op}: outputs differing from TFLite-Micro (set, scales, count): {bad[:3]}"
