"""The memory report (training/memory.py) against what the generated C package allocates.

Small hardened networks are built by hand (positions set, no training), converted to int8
with a few calibration steps and turned into the C package (convert/codegen.py); the package
is compiled for the host with gcc, with the reference kernels (MG_FAST=0) and with the fast
ones (MG_FAST=1, what a Cortex-M4 build uses), and the sizes of its state and delay arrays
are read from the object file's symbol table (`nm -S`), not from the generator's own
arithmetic. Boundary
cases: spans 256 and 257 (largest delay 255 / 256: one past the uint8 range), a channel whose
delay is the span's maximum, a channel with only delay 0 (no ring frame) and a layer whose
delays are all 0 (no ring at all).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.memory import memory_report
from mgrade_edge.training.model import MGradeNet

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("nm") is None,
                       reason="host gcc/nm not installed"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]

# (name, config, per-layer positions [H, N] set by hand)
CASES = [
    ("span256", dict(d_model=4, n_layers=1, kernel_span=256, n_taps=2),
     [[[0., 255.], [1., 3.], [7., 7.], [0., 0.]]]),
    ("span257", dict(d_model=4, n_layers=2, kernel_span=257, n_taps=2),
     [[[256., 2.], [0., 255.], [0., 0.], [5., 1.]],
      [[0., 0.], [0., 0.], [0., 0.], [0., 0.]]]),
    ("conv_only", dict(d_model=3, n_layers=2, kernel_span=9, n_taps=3, use_rnn=False),
     [[[8., 0., 8.], [1., 2., 3.], [0., 4., 0.]],
      [[2., 2., 2.], [0., 1., 0.], [8., 7., 6.]]]),
]


def _hardened_net(cfg_kw: dict, positions: list) -> MGradeNet:
    torch.manual_seed(0)
    net = MGradeNet(ModelConfig(norm="batch", **cfg_kw), n_in=2, n_classes=3)
    with torch.no_grad():
        for block, pos in zip(net.blocks, positions):
            block.conv.positions.copy_(torch.tensor(pos))
    return net.harden().eval()


def _package(net: MGradeNet, out: Path) -> Path:
    """int8 .tflite (a few calibration steps on random input) -> C package in out."""
    from mgrade_edge.convert.calibrate import step_feeds
    from mgrade_edge.convert.codegen import generate
    from mgrade_edge.convert.quantize import convert_int8, finalize
    from mgrade_edge.convert.spec import extract

    spec = extract(net)
    xs = torch.randn(2, 12, net.n_in, generator=torch.Generator().manual_seed(1))
    feeds = [f for f, _ in step_feeds(net, spec, xs)]
    model = finalize(convert_int8(spec, feeds), spec, {"kernel_span": net.cfg.span})
    generate(model, out)
    return out


def _symbol_sizes(pkg: Path, fast: int) -> dict[str, int]:
    """name -> bytes of every data symbol of the compiled package (mg_model.c), built with
    the portable reference kernels (MG_FAST=0) or the fast ones (MG_FAST=1, the Cortex-M
    default); plus mg_<field> for every array field of the instance type mg_model_t (ring<l>,
    h<l>), sized by the compiler: a probe object defines char mg_<field>[sizeof(m.field)]."""
    fields = re.findall(r"^\s+int8_t (\w+)\[", re.search(
        r"struct mg_model_s \{(.*?)\};", (pkg / "mg_model_data.h").read_text(), re.S).group(1),
        re.M)
    fields = [f for f in fields if not f.startswith("dbg_")]     # MG_MODEL_DEBUG only
    probe = pkg / "instance_probe.c"
    probe.write_text('#include "mg_model_data.h"\n' + "".join(
        f"char mg_{f}[sizeof(((mg_model_t *)0)->{f})];\n" for f in fields))
    sizes = {}
    for src in (pkg / "mg_model.c", probe):
        obj = pkg / f"{src.stem}_fast{fast}.o"
        subprocess.run(["gcc", "-std=c99", "-O0", f"-DMG_FAST={fast}", "-c", "-I", str(RUNTIME),
                        "-I", str(pkg), str(src), "-o", str(obj)], check=True)
        nm = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True)
        for line in nm.stdout.splitlines():
            parts = line.split()
            if len(parts) == 4:
                sizes[parts[3]] = int(parts[1], 16)
    probe.unlink()
    return sizes


def _delay_table(sizes: dict, src: str, layer: int) -> tuple[int, str]:
    """(bytes, C element type) of the layer's one stored delay table (reference kernels:
    mg_l<L>_delay, fast kernels: mg_l<L>_delay_cm)."""
    names = [n for n in (f"mg_l{layer}_delay", f"mg_l{layer}_delay_cm") if n in sizes]
    assert len(names) == 1, f"layer {layer}: delay tables {names}"
    return sizes[names[0]], _elem_type(src, names[0])


def _elem_type(src: str, name: str) -> str:
    m = re.search(r"(\w+)\s+" + re.escape(name) + r"\s*\[", src)
    assert m, f"{name} not declared in the package"
    return m.group(1)


@pytest.mark.parametrize("name,cfg_kw,positions", CASES, ids=[c[0] for c in CASES])
def test_report_equals_package_allocation(name, cfg_kw, positions, tmp_path):
    net = _hardened_net(cfg_kw, positions)
    rep = memory_report(net)
    assert rep["hardened"]
    pkg = _package(net, tmp_path / "pkg")
    src = (pkg / "mg_model.c").read_text()
    for fast in (0, 1):
        _check_against(name, cfg_kw, positions, net, rep, _symbol_sizes(pkg, fast), src)


def _check_against(name, cfg_kw, positions, net, rep, sizes, src):
    H, N = cfg_kw["d_model"], cfg_kw["n_taps"]
    for L, (block, row) in enumerate(zip(net.blocks, rep["layers"][1:-1])):
        counts, trimmed = row["counts"], row["trimmed"]
        # the ring the device keeps: per channel its largest delay (the hand-set positions)
        expect_ring = int(np.asarray(positions[L]).max(axis=1).sum())
        ring = sizes.get(f"mg_ring{L}", 0)          # absent when every delay is 0
        assert ring == expect_ring, f"{name} layer {L}: package ring {ring} B"
        assert counts["ring_trimmed"] == ring, (
            f"{name} layer {L}: report ring {counts['ring_trimmed']} B, package {ring} B")
        h = sizes.get(f"mg_h{L}", 0)
        assert counts["rnn_state"] == h == (H if cfg_kw.get("use_rnn", True) else 0)
        assert trimmed["int8_state_bytes"] == ring + h
        # stored delays: the package's table, its element width from the symbol size
        delay_bytes, ctype = _delay_table(sizes, src, L)
        assert delay_bytes % (N * H) == 0
        width = delay_bytes // (N * H)
        assert width == {"uint8_t": 1, "uint16_t": 2}[ctype]
        assert counts["delays"] * width == delay_bytes
        int8_params_no_delays = (counts["weights"] + counts["conv_taps"]
                                 + 4 * counts["biases"] + counts["norm"])
        assert trimmed["int8_param_bytes"] == int8_params_no_delays + delay_bytes, (
            f"{name} layer {L}: the report stores delays in "
            f"{(trimmed['int8_param_bytes'] - int8_params_no_delays) / counts['delays']:g} B, "
            f"the package in {width} B")
    total_ring = sum(sizes.get(f"mg_ring{L}", 0) for L in range(len(net.blocks)))
    total_h = sum(sizes.get(f"mg_h{L}", 0) for L in range(len(net.blocks)))
    assert rep["total"]["counts"]["ring_trimmed"] == total_ring
    # the readout accumulator (int32 per class) is the app's, not the package's
    acc = 4 * net.n_classes
    assert rep["total"]["trimmed"]["int8_state_bytes"] == total_ring + total_h + acc
