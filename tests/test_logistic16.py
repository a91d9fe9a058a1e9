"""The int16 LOGISTIC (the int16 gate of the 16-bit minGRU state): convert/tflm_params'
Prepare-time parameters, table and NumPy kernel against TFLite-Micro on every rescaled input
of both signs, and the C kernel (mcu/runtime/mg_state16.h) and table (mg_quant.c) against the
NumPy kernel, bit-exact."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from mgrade_edge.convert.tflm_params import SIGMOID_LUT16, logistic16, logistic16_params
from tests.conftest import ROOT
from tests.tflm_probe import TABLE_SPAN, outputs_by_v, probe_scales, recover_table

RUNTIME = ROOT / "mcu" / "runtime"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"]


def _rescale(s, x):
    p = logistic16_params(s)
    sh = p["input_left_shift"]
    return (np.asarray(x, np.int64) * p["input_multiplier"] + ((1 << (sh - 1)) if sh else 0)) >> sh


@pytest.fixture(scope="module")
def tflm_outputs() -> dict:
    return outputs_by_v(_rescale)


def test_probe_covers_every_table_input(tflm_outputs):
    """Precondition: the probe scales reach every |v| below the table span, both signs."""
    missing = [v for v in range(-TABLE_SPAN + 1, TABLE_SPAN) if v not in tflm_outputs]
    assert not missing, f"{len(missing)} rescaled inputs never probed, e.g. {missing[:5]}"


def test_reference_equals_tflm_at_every_probe_scale():
    """logistic16 (with logistic16_params) = TFLite-Micro for all 65,536 int16 inputs at every
    probe scale, the power-of-two case (scale 2^-12) included."""
    from tests.tflm_probe import run_logistic16

    x = np.arange(-32768, 32768)
    for s in probe_scales()[::7] + [2.0 ** -12, 1e-4, 3e-3]:
        np.testing.assert_array_equal(logistic16(logistic16_params(s), x),
                                      run_logistic16(s, x), err_msg=f"input scale {s!r}")


def test_table_is_the_one_tflm_interpolates(tflm_outputs):
    """SIGMOID_LUT16 is recovered from TFLite-Micro's outputs (starting from the formula
    round(65536 sigmoid(i / 24)), which is off by one in some entries)."""
    guess = np.floor(65536.0 / (1.0 + np.exp(-np.arange(256) / 24.0)) + 0.5)
    table = recover_table(tflm_outputs, guess)
    assert table.tolist() == list(SIGMOID_LUT16)
    assert int((table != guess).sum()) > 0       # the formula alone would not be bit-exact


def test_c_table_equals_python_table():
    text = (RUNTIME / "mg_quant.c").read_text()
    body = text[text.index("mg_sigmoid_lut16[256] = {"):]
    body = body[body.index("{") + 1:body.index("};")]
    assert [int(v) for v in re.findall(r"\d+", body)] == list(SIGMOID_LUT16)


def test_large_input_scale_is_refused():
    from mgrade_edge.convert.tflm_params import CodegenError

    with pytest.raises(CodegenError, match="too large"):
        logistic16_params(3.0)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
def test_c_kernel_equals_reference(tmp_path):
    """mg_logistic1_s16 = logistic16 for every int16 input at several scales."""
    scales = [2.0 ** -12, 1e-4, 2.1e-4, 7.7e-4, 3e-3, 0.05]
    params = [logistic16_params(s) for s in scales]
    src = ['#include <stdio.h>', '#include "mg_state16.h"', "int main(void)", "{",
           "    static const mg_logistic16_params_t p[] = {"
           + ", ".join(f"{{{q['input_multiplier']}, {q['input_left_shift']}}}" for q in params)
           + "};", "    unsigned k;", "    long x;",
           f"    for (k = 0; k < {len(params)}; ++k)",
           "        for (x = -32768; x <= 32767; ++x)",
           '            printf("%d\\n", (int)mg_logistic1_s16(&p[k], (int16_t)x));',
           "    return 0;", "}"]
    (tmp_path / "t.c").write_text("\n".join(src) + "\n")
    subprocess.run(["gcc", *CFLAGS, f"-I{RUNTIME}", str(tmp_path / "t.c"),
                    str(RUNTIME / "mg_quant.c"), "-o", str(tmp_path / "t")], check=True)
    out = np.array(subprocess.run([str(tmp_path / "t")], capture_output=True, text=True,
                                  check=True).stdout.split(), np.int64).reshape(len(params), -1)
    x = np.arange(-32768, 32768)
    for q, row, s in zip(params, out, scales):
        np.testing.assert_array_equal(row, logistic16(q, x), err_msg=f"scale {s}")
