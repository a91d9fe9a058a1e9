"""The installable distribution (pyproject.toml): a wheel holding one namespaced import package
`mgrade_edge` (training, convert, host_tools and the C sources under mcu) and nothing under a
generic top-level name; the `host` extra streams a converted model through the emulated board
in a fresh venv where torch and TensorFlow are not installed at all; the installed package,
used from outside the repo, trains the mGRADE layer and writes a C folder that builds."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, timeout=600, **kw):
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once per test run (for every xdist worker: made_once) from a
    copy of the tracked files (the checkout stays clean: setuptools writes build/ and
    *.egg-info where it builds)."""
    from tests.conftest import made_once, shared_root

    def build(base: Path) -> None:
        shutil.rmtree(base, ignore_errors=True)            # a failed earlier try
        src, out = base / "src" / "mgrade-edge", base / "wheel"
        out.mkdir(parents=True)
        files = _run(["git", "ls-files", "-z"], ROOT).stdout.split("\0")
        for f in filter(None, files):
            if (ROOT / f).is_file():
                (src / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, src / f)
        res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", out, src], src)
        assert res.returncode == 0, res.stdout + res.stderr

    base = made_once(tmp_path_factory, "wheel", shared_root(tmp_path_factory) / "wheel", build)
    (whl,) = (base / "wheel").glob("mgrade_edge-*.whl")
    return whl


def test_wheel_has_one_namespaced_package_and_the_c_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mgrade_edge"}, tops
    for must in ("mgrade_edge/training/layers.py", "mgrade_edge/convert/codegen.py",
                 "mgrade_edge/host_tools/stream_eval.py", "mgrade_edge/mcu/runtime/mg_model.h",
                 "mgrade_edge/mcu/runtime/mg_fast.h", "mgrade_edge/mcu/app/mg_app.c",
                 "mgrade_edge/mcu/micropython/mg_app.py",
                 "mgrade_edge/mcu/runtime/tests/model_check.c",        # the resource table's
                 "mgrade_edge/mcu/runtime/tests/qemu/platform.c",      # Cortex-M4 harness
                 "mgrade_edge/mcu/boards/qemu-shared/sections.ld"):
        assert must in names, must
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(ep).decode()
    for s in ("mgrade-train", "mgrade-convert", "mgrade-codegen", "mgrade-stream-eval",
              "mgrade-package"):
        assert f"{s} = mgrade_edge.training.console:" in scripts, scripts


def _venv(path: Path, with_pip: bool) -> Path:
    args = [sys.executable, "-m", "venv", path] + ([] if with_pip else ["--without-pip"])
    res = _run(args, path.parent)
    assert res.returncode == 0, res.stderr
    return path / "bin" / "python"


def test_host_extra_streams_on_the_emulated_board_without_torch(wheel, tiny_int8, tmp_path):
    """pip install WHEEL[host] in a fresh venv (numpy, pyserial, tflite-micro only), then the
    installed mgrade-emulated-eval streams the tiny model's firmware: 0 LSB, exit 0; torch
    and TensorFlow are not importable there."""
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make toolchain)")
    from mgrade_edge.convert.codegen import generate

    generate((tiny_int8 / "model.tflite").read_bytes(), tmp_path / "pkg")
    res = _run(["make", "-s", "-C", ROOT / "mcu", "firmware", "BOARD=qemu-cm4",
                f"MODEL_SRC={tmp_path / 'pkg'}", f"BUILD_DIR={tmp_path / 'fw'}"], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    py = _venv(tmp_path / "hostenv", with_pip=True)
    res = _run([py, "-m", "pip", "install", "-q", f"{wheel}[host]"], tmp_path, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for heavy in ("torch", "tensorflow", "ai_edge_litert"):
        res = _run([py, "-c", f"import {heavy}"], tmp_path)
        assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr, heavy
    res = _run([tmp_path / "hostenv" / "bin" / "mgrade-emulated-eval",
                tmp_path / "fw" / "firmware.elf", "--model", tiny_int8,
                "--json", tmp_path / "m.json"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["max_abs_logit_diff"] == 0 and m["argmax_agreement"] == 1


def test_installed_package_trains_the_layer_and_writes_c_outside_the_repo(wheel, tiny_int8,
                                                                         tmp_path):
    """The wheel installed (no editable finder, nothing of the checkout on sys.path) in a venv
    that borrows the project venv's third-party packages (torch & co., to spare CI a 1 GB
    install): from a folder outside the repo, the layer trains one step, and the installed
    C-folder writer (mgrade_edge.mcu carries the runtime) produces a folder that builds."""
    py = _venv(tmp_path / "env", with_pip=False)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
                wheel], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import torch, mgrade_edge.training.layers as L\n"
        "from mgrade_edge.training.config import ModelConfig\n"
        "from mgrade_edge.training.model import MGradeNet\n"
        f"assert L.__file__.startswith({str(site)!r}), L.__file__\n"
        "net = MGradeNet(ModelConfig(d_model=8, n_layers=1, kernel_span=8, n_taps=2), n_in=3,"
        " n_classes=2)\n"
        "opt = torch.optim.Adam(net.parameters(), 1e-2)\n"
        "x, y = torch.randn(4, 20, 3), torch.tensor([0, 1, 0, 1])\n"
        "loss = torch.nn.functional.cross_entropy(net(x), y); loss.backward(); opt.step()\n"
        "print('loss', float(loss))\n")
    res = _run([py, "-c", code], work)
    assert res.returncode == 0 and res.stdout.startswith("loss "), res.stdout + res.stderr
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    res = _run([py, "-m", "mgrade_edge.convert.cpackage", tiny_int8, "--out", work / "c",
                "--no-run"], work)
    assert res.returncode == 0, res.stdout + res.stderr
    res = _run(["make", "-s", "-C", work / "c"], work)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm toolchain / qemu not installed: no resource table")
    # the resource table from the installed harness (mgrade_edge.mcu's runtime/tests, no
    # benchmarks/): instructions per step on both paths; and the stack row through
    # mgrade-package's module (host_tools/firmware_stack.py), on a copy (it stores the table)
    res = _run([py, "-m", "mgrade_edge.convert.codegen", tiny_int8 / "model.tflite", "--out",
                work / "gen", "--measure"], work)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row = next(r for r in res.stdout.splitlines() if "instructions/step (M4)" in r)
    fast, portable = (int(v) for v in row.split()[-2:])
    assert 0 < fast < portable, row
    model = shutil.copytree(tiny_int8, work / "model")
    res = _run([py, "-m", "mgrade_edge.host_tools.firmware_stack", model, "--out",
                work / "c-stack", "--no-run", "--stack"], work)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row = next(r for r in res.stdout.splitlines() if "stack high-water" in r)
    assert int(row.split()[3]) > 0 and "reserved" in row, row
