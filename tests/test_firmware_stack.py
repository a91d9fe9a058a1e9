"""The qemu-cm4 firmware with the trained digits model (fast path): the board paints its stack
at reset, a real protocol session runs, the stack region is read back through the QEMU monitor,
and the high-water mark must leave at least a 4x margin in the stack the link script reserves
(benchmarks/firmware_cost.py; the figure sizes STACK_SIZE in mcu/boards/qemu-cm4/link.ld)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import firmware_cost as fc

pytestmark = [
    pytest.mark.skipif(
        shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
        reason="arm toolchain / qemu not installed"),
    pytest.mark.slow,          # the trained model, a firmware build and a QEMU session
    pytest.mark.trained,
]


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    env = os.environ.get("MGRADE_TEST_MODEL")
    return Path(env) if env else request.getfixturevalue("digits_int8")


def test_stack_high_water_has_margin(model_dir, tmp_path):
    from mgrade_edge.convert.codegen import generate

    digits_int8 = model_dir
    generate((digits_int8 / "model.tflite").read_bytes(), tmp_path / "gen")
    fw = fc.build(tmp_path / "gen", tmp_path / "fw", fast=True)
    x = np.load(digits_int8 / "test_data.npz")["x"][:1].astype(np.int8)
    res = fc.stack_high_water(fw, x)
    assert res["steps"] == x.shape[1]
    assert 64 < res["stack_used"] <= fw["stack_reserved"] // 4, (res, fw["stack_reserved"])
    print(f"\nstack high-water {res['stack_used']} B of {fw['stack_reserved']} B reserved; "
          f"firmware flash {fw['flash']} B, RAM {fw['ram']} B")
