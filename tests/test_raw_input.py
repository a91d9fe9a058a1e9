"""mgrade_edge.convert.raw_input: a task that normalises 8-bit codes (MNIST pixels) is converted to a
model that reads the raw codes, on whose int8 grid all 256 values are exact; the network
computes the same function; the normalised values would not fit any int8 grid."""
import shutil
import subprocess

import numpy as np
import pytest
import torch

from mgrade_edge.convert.calibrate import step_feeds
from mgrade_edge.convert.quantize import convert_int8, finalize, read_metadata
from mgrade_edge.convert.raw_input import INPUT_UNITS, takes_codes, to_raw_units
from mgrade_edge.convert.spec import extract
from mgrade_edge.convert.stream import Streamer
from tests.test_tasks import fake_mnist
from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.model import MGradeNet
from mgrade_edge.training.tasks import load_task
from mgrade_edge.training.tasks.mnist import permutation


def _net():
    torch.manual_seed(0)
    net = MGradeNet(ModelConfig(d_model=8, n_layers=1, kernel_span=6, n_taps=2, norm="none"),
                    n_in=1, n_classes=10).eval()
    return net.harden()


def _int8_model(net, x: torch.Tensor, units: dict) -> bytes:
    spec = extract(net)
    feeds = [f for f, _ in step_feeds(net, spec, x)]
    return finalize(convert_int8(spec, feeds), spec, units)


def test_psmnist_codes_are_the_pixels_and_the_net_computes_the_same(tmp_path):
    pixels = fake_mnist(tmp_path / "m", n_train=30, n_test=7)
    data = load_task("psmnist", {"n_val": 10}, tmp_path / "m", 0)
    assert data.raw_input is not None
    net = _net()
    x_norm = data.x_test.clone()
    with torch.no_grad():
        want = net(x_norm)
    assert to_raw_units(net, data)
    codes = pixels["test_images"].reshape(7, -1)[:, permutation(0)].astype(np.float32)
    assert np.array_equal(data.x_test[..., 0].numpy(), codes)      # exactly the pixels
    with torch.no_grad():
        torch.testing.assert_close(net(data.x_test), want, atol=1e-5, rtol=1e-5)
    assert not to_raw_units(net, data)        # once: the net normalises now


def test_the_int8_input_grid_holds_every_code_and_not_every_normalised_value(tmp_path):
    fake_mnist(tmp_path / "m", n_train=30, n_test=7)
    data = load_task("smnist", {"n_val": 10}, tmp_path / "m", 0)
    x = data.x_train[:3, :200]
    levels = np.arange(256, dtype=np.float32)[:, None]
    a, b = data.raw_input
    # normalised: the 256 values sit half a step off the grid; rounding merges some
    plain_model = _int8_model(_net(), x, {})
    q = Streamer(plain_model, "tflm").quantize_input(a * levels + b)
    assert len(np.unique(q)) < 256
    # raw codes: scale 1, zero point -128, int8 = code - 128 for every code
    net = _net()
    to_raw_units(net, data)
    model = _int8_model(net, data.x_train[:3, :200], {"input_units": INPUT_UNITS})
    s = Streamer(model, "tflm")
    assert s.input_quant == (1.0, -128)
    assert np.array_equal(s.quantize_input(levels), (levels - 128).astype(np.int8))
    assert takes_codes(read_metadata(model)) and not takes_codes(read_metadata(plain_model))


QUANTIZE_CODES = r"""
#include <stdio.h>
#include "mg_model_data.h"
int main(void)
{
    int code;
    for (code = 0; code < 256; ++code) {
        float x = (float)code;
        int8_t q;
        mg_model_quantize_frame(&x, &q);
        printf("%d\n", q);
    }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
def test_the_c_package_of_a_raw_input_model_builds_and_is_bit_exact(tmp_path):
    """Scale 1 on the input: the generated header's float literal must still be C (it was
    `1f`), the package's own frame quantizer must map code p to p - 128, and both kernel
    paths must equal TFLite-Micro step for step."""
    from benchmarks import mcu_cost as mc

    fake_mnist(tmp_path / "m", n_train=30, n_test=7)
    data = load_task("psmnist", {"n_val": 10}, tmp_path / "m", 0)
    net = _net()
    to_raw_units(net, data)
    model = _int8_model(net, data.x_train[:3, :200], {"input_units": INPUT_UNITS})
    d = tmp_path / "int8"
    d.mkdir()
    (d / "model.tflite").write_bytes(model)
    xq = Streamer(model, "tflm").quantize_input(data.x_test[:2, :120].numpy())
    np.savez(d / "test_data.npz", x=xq)
    info = mc.generate(d, tmp_path / "gen", 2)
    assert "MODEL_INPUT_SCALE 1.0f" in (tmp_path / "gen" / "mg_model_data.h").read_text()
    (tmp_path / "q.c").write_text(QUANTIZE_CODES)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", f"-I{tmp_path / 'gen'}",
                    f"-I{mc.RUNTIME}", str(tmp_path / "q.c"), "-o", str(tmp_path / "q")],
                   check=True)
    out = subprocess.run([str(tmp_path / "q")], capture_output=True, text=True, check=True)
    assert [int(v) for v in out.stdout.split()] == list(range(-128, 128))
    ref = info["ref"]
    expect = np.concatenate([ref["logits"], ref["states"]], axis=2)
    for fast in (False, True):
        exe = mc.build_host_runner(tmp_path / "gen", tmp_path / f"run{int(fast)}", fast=fast)
        np.testing.assert_array_equal(mc.run_host_runner(exe, ref["x"]), expect)
