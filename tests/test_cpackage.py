"""The self-contained per-run C folder (convert/cpackage.py) and the resource table
(convert/resources.py): the folder, copied alone outside the repository, builds with host cc
and its example prints every step's logits equal to TFLite-Micro's (0 LSB, both kernel
paths, an int8 and an int16-state model); it links for Cortex-M4 and Cortex-M0+ with
arm-none-eabi-gcc; --name sets the model's name and C prefix (default: the run folder); the
resource table's figures hang together; `make` keeps builds per run and `compare` builds the
firmware; a model-id mismatch names the command that fixes it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_model import TinyConfig

ROOT = Path(__file__).resolve().parents[1]
HAVE_ARM = shutil.which("arm-none-eabi-gcc") is not None
HAVE_QEMU = HAVE_ARM and shutil.which("qemu-system-arm") is not None

pytestmark = [
    pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                       reason="host cc / make not installed"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]

S16 = TinyConfig(H=6, L=2, K=7, N=3, seed=11, state_bits=16, input_bits=16)


def _run_folder(tiny_models, tmp_path, cfg, run="my-run") -> Path:
    """A run folder in convert's layout, RUN/int8 = the tiny model's folder (copied)."""
    d = tmp_path / run / "int8"
    shutil.copytree(tiny_models(cfg), d)
    return d


def _example_logits(stdout: str, n_out: int) -> np.ndarray:
    rows = [list(map(int, m.group(1).split()))
            for m in re.finditer(r"^step \d+: (.*)$", stdout, re.M)]
    a = np.array(rows, np.int64)
    assert a.ndim == 2 and a.shape[1] == n_out, stdout[:500]
    return a


@pytest.mark.parametrize("cfg", [TinyConfig(), S16], ids=["int8-state", "int16-state"])
def test_c_folder_builds_alone_and_matches_tflm(tiny_models, tmp_path, cfg):
    from mgrade_edge.convert.cpackage import write_package
    from mgrade_edge.convert.vectors import reference_steps

    model_dir = _run_folder(tiny_models, tmp_path / "repo_side", cfg)
    r = write_package(model_dir, model_dir / "c", run=False)
    assert r["name"] == "my-run" and r["prefix"] == "my_run"      # the run folder, not 'tiny'
    alone = tmp_path / "elsewhere" / "pkg"                       # only the folder, moved away
    shutil.copytree(model_dir / "c", alone)
    x = np.load(model_dir / "test_data.npz")["x"][:1]
    ref, _ = reference_steps((model_dir / "model.tflite").read_bytes(), x)
    for fast in (0, 1):
        subprocess.run(["make", "-s", "clean"], cwd=alone, check=True)
        b = subprocess.run(["make", "-s", f"CFLAGS=-std=c99 -O2 -Wall -Wextra -Werror -pedantic "
                                          f"-DMG_FAST={fast}"],
                           cwd=alone, capture_output=True, text=True, timeout=300)
        assert b.returncode == 0, b.stdout + b.stderr
        run = subprocess.run([str(alone / "example")], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stdout[-500:]
        assert run.stdout.startswith("model my-run:"), run.stdout[:200]
        got = _example_logits(run.stdout, ref.shape[2])
        assert got.shape[0] == ref.shape[1]
        assert np.array_equal(got, ref[0].astype(np.int64)), (fast, got[:3], ref[0, :3])
        assert "last step: equals the TFLite-Micro reference" in run.stdout
    nm = subprocess.run(["nm", str(alone / "example")], capture_output=True, text=True).stdout
    assert " T my_run_model_step" in nm and " T mg_model_step" not in nm
    readme = (alone / "README.md").read_text()
    for row in ("flash: weights", "flash: parameters", "flash: code", "RAM: state",
                "RAM: scratch", "RAM: stack high-water", "instructions/step"):
        assert row in readme, row


@pytest.mark.skipif(not HAVE_ARM, reason="arm-none-eabi-gcc not installed")
def test_c_folder_links_for_cortex_m4_and_m0plus(tiny_int8, tmp_path):
    from mgrade_edge.convert.cpackage import write_package

    d = tmp_path / "run7" / "int8"
    shutil.copytree(tiny_int8, d)
    write_package(d, tmp_path / "pkg", name="kws 2", run=False)
    alone = tmp_path / "copy"
    shutil.copytree(tmp_path / "pkg", alone)
    b = subprocess.run(["make", "-s", "cortex-m4", "cortex-m0plus"], cwd=alone,
                       capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stdout + b.stderr
    arch = {}
    for core in ("cortex-m4", "cortex-m0plus"):
        elf = alone / f"example_{core}.elf"
        attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(elf)], capture_output=True,
                               text=True, check=True).stdout
        arch[core] = re.search(r"Tag_CPU_arch: (\S+)", attrs).group(1)
        syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                              check=True).stdout
        assert " T kws_2_model_step" in syms      # --name "kws 2" -> prefix kws_2
    assert arch == {"cortex-m4": "v7E-M", "cortex-m0plus": "v6S-M"}, arch


def test_c_folder_refuses_a_foreign_out_and_a_bad_model(tiny_int8, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cmd = [sys.executable, "-m", "mgrade_edge.convert.cpackage", str(tiny_int8), "--no-run"]
    r = subprocess.run([*cmd, "--out", str(foreign)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "is not a folder this command wrote" in r.stderr
    assert "Traceback" not in r.stderr and (foreign / "notes.txt").read_text() == "keep me"
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.cpackage", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "no model.tflite" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not HAVE_QEMU, reason="arm toolchain / qemu not installed")
def test_resource_table_is_consistent(tiny_int8, tmp_path):
    """Flash rows add up; the fast path runs fewer instructions than the portable one, both
    bit-exact under QEMU; the microseconds are instructions / MHz; the table is stored in
    report.json, then reused by the C folder."""
    from mgrade_edge.convert import resources
    from mgrade_edge.convert.codegen import resource_table
    from mgrade_edge.convert.cpackage import write_package

    x = np.load(tiny_int8 / "test_data.npz")["x"]
    res = resource_table((tiny_int8 / "model.tflite").read_bytes(), x, steps=10)
    assert res["steps_measured"] == 10 and res["missing"] is None
    fast, port = res["paths"]["fast"], res["paths"]["portable"]
    for p in (fast, port):
        f = p["flash"]
        assert f["weights"] > 0 and f["parameters"] > 0 and f["code"] > 0
        assert f["weights"] + f["parameters"] + f["code"] == f["total"]
        assert p["ram"]["state"] == res["state_bytes"] and p["logits_mismatched_bytes"] == 0
        ips = p["instructions_per_step"]["mean"]
        assert p["us_per_step_estimate"]["160"] == pytest.approx(ips / 160, abs=0.01)
    assert fast["instructions_per_step"]["mean"] < port["instructions_per_step"]["mean"]
    text = resources.table(res)
    assert "est. us/step @ 240 MHz" in text and "estimate from emulated instruction" in text

    d = tmp_path / "r" / "int8"
    shutil.copytree(tiny_int8, d)
    (d / "report.json").write_text(json.dumps({"model_id": res["model_id"]}))
    resources.store(d, res)
    r = write_package(d, d / "c")          # reuses the stored table (same model id)
    assert r["resources"] == res
    assert json.loads((d / "report.json").read_text())["resources"] == res
    assert f"| instructions/step (M4) | {fast['instructions_per_step']['mean']:.0f} |" in \
        (d / "c" / "README.md").read_text()


def test_convert_refuses_stack_in_one_line(tiny_int8, tmp_path):
    """The stack row needs the host tools (a protocol session in QEMU): convert's codegen and
    cpackage answer --stack with one line naming the command that measures it."""
    for args in (["mgrade_edge.convert.cpackage", tiny_int8, "--out", tmp_path / "c"],
                 ["mgrade_edge.convert.codegen", tiny_int8 / "model.tflite", "--out",
                  tmp_path / "g"]):
        r = subprocess.run([sys.executable, "-m", *map(str, args), "--stack"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and "mgrade-package" in r.stderr, r.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "g").exists()


@pytest.mark.skipif(not HAVE_QEMU, reason="arm toolchain / qemu not installed")
def test_stack_row_from_the_host_tools_probe(tiny_int8, tmp_path):
    """The C folder with the probe host_tools/firmware_stack passes in (what mgrade-package
    --stack does): the qemu-cm4 firmware of this model ran a protocol session of its first
    test sequence, and the painted stack it read back is in the table and the README."""
    from mgrade_edge.convert.cpackage import write_package
    from mgrade_edge.host_tools.firmware_stack import probe

    d = tmp_path / "r" / "int8"
    shutil.copytree(tiny_int8, d)
    r = write_package(d, d / "c", run=False, stack=probe)
    s = r["resources"]["stack"]
    steps = np.load(d / "test_data.npz")["x"].shape[1]
    assert s["board"] == "qemu-cm4" and s["steps"] == min(steps, 256), s
    assert 64 < s["used"] <= s["reserved"], s
    assert f"| RAM: stack high-water | {s['used']} B of {s['reserved']} B reserved" in \
        (d / "c" / "README.md").read_text()


def test_make_builds_per_run_and_compare_builds_the_firmware():
    """`make -n`: two runs get their own build folders, compare builds the firmware first."""
    outs = {}
    for run in ("runs/a", "runs/b"):
        r = subprocess.run(["make", "-n", "compare", "BOARD=qemu-cm4", f"RUN={run}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        outs[run] = r.stdout
    a, b = outs["runs/a"], outs["runs/b"]
    assert "BUILD_DIR=build/a/qemu-cm4" in a and "BUILD_DIR=build/b/qemu-cm4" in b
    assert a.index("mcu firmware") < a.index("emulated_eval build/a/qemu-cm4/firmware.elf")
    assert "--name a " in a and "--name b " in b
    r = subprocess.run(["make", "-n", "package", "RUN=runs/a", "NAME=kws"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert "mgrade_edge.convert.cpackage runs/a/int8 --out runs/a/int8/c --name kws" in r.stdout


def test_mismatch_names_the_make_command():
    from mgrade_edge.host_tools.stream_eval import reflash_command

    assert reflash_command("qemu-cm4 (mps2-an386, Cortex-M4F)", Path("runs/x/int8")) == \
        "make firmware flash BOARD=qemu-cm4 RUN=runs/x"
    assert reflash_command("my custom board", Path("out/m")) == \
        "make firmware flash BOARD=<your board> MODEL=out/m"


@pytest.mark.skipif(not HAVE_ARM, reason="arm-none-eabi-gcc not installed")
def test_codegen_prints_the_table_and_names_the_model_after_its_folder(tiny_int8, tmp_path):
    d = tmp_path / "walk-7" / "int8"
    shutil.copytree(tiny_int8, d)
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.codegen", str(d / "model.tflite"),
                        "--out", str(tmp_path / "pkg")], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("walk-7: model ") and "flash: code" in r.stdout
    assert "instructions/step (M4)   not measured (python -m mgrade_edge.convert.codegen" in r.stdout
    assert '#define MG_MODEL_NAME "walk-7"' in (tmp_path / "pkg" / "mg_model_data.h").read_text()


@pytest.mark.slow          # the session's trained digits model (or MGRADE_TEST_MODEL)
@pytest.mark.trained
def test_convert_stores_the_resource_table(request):
    """A conversion by python -m mgrade_edge.convert: report.json carries the table, measured, both
    paths bit-exact with TFLite-Micro on the emulated M4."""
    env = os.environ.get("MGRADE_TEST_MODEL")
    model_dir = Path(env) if env else request.getfixturevalue("digits_int8")
    res = json.loads((model_dir / "report.json").read_text())["resources"]
    if res["missing"]:
        pytest.skip(res["missing"])
    for p in res["paths"].values():
        assert p["logits_mismatched_bytes"] == 0 and p["instructions_per_step"]["mean"] > 0
        assert p["flash"]["total"] > p["flash"]["weights"] > 0
