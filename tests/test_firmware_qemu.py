"""The qemu-cm4 firmware with the toy test model, end to end: build it with mcu/Makefile, run it
in QEMU through host_tools/emulator.py, talk to it with host_tools/protocol.py and
host_tools/stream_eval.py: deterministic instruction counts, 3,000 malformed frames never break
it, the emulator never outlives the test, and the other boards' build entry points behave. The
protocol rules (HELLO, runs equal to the Python twin, the reply cache, size limits, error
frames) are checked on this board and every other target by tests/test_conformance.py."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "toy_model"))

from mgrade_edge.host_tools import protocol as P  # noqa: E402
from mgrade_edge.host_tools.emulator import Emulator  # noqa: E402
from toy_model import MODEL_ID, N_IN, N_OUT, ToyModel  # noqa: E402

TOY = ROOT / "tests" / "fixtures" / "toy_model"
PY = sys.executable

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                               reason="arm-none-eabi-gcc not installed (make toolchain)")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                reason="qemu-system-arm not installed (make toolchain)")


def _make(*args, timeout=180):
    return subprocess.run(["make", "-C", str(ROOT / "mcu"), *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed (make toolchain)")
    out = tmp_path_factory.mktemp("fw-qemu")
    res = _make("firmware", "BOARD=qemu-cm4", "MODEL_SRC=tests/fixtures/toy_model",
                f"BUILD_DIR={out}")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[0-9a-f]+\s+\S*firmware\.elf", res.stdout, re.M)
    assert m, res.stdout
    text, data, bss = map(int, m.groups())
    print(f"\ntoy firmware: flash {text + data} B (text {text}, data {data}), "
          f"RAM {data + bss} B (incl. 16 KiB stack)")
    return out / "firmware.elf"


@pytest.fixture(scope="module")
def emu(firmware):
    e = Emulator(firmware)
    e.start()
    pid = e.pid
    yield e
    e.stop()
    with pytest.raises(ProcessLookupError):       # QEMU is gone after the module
        os.kill(pid, 0)


@pytest.fixture(scope="module")
def dev(emu):
    d = P.Device.open(emu.url, timeout=3.0)
    yield d
    d.close()


def _seq(T, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (T, N_IN)).astype(np.int8)


@pytest.mark.slow
def test_instruction_counts_are_deterministic(dev):
    x = _seq(200, 3)
    costs = [dev.run(x).ticks for _ in range(3)]
    chunks = -(-200 // ((240 - 4) // N_IN))
    assert max(costs) - min(costs) <= chunks, costs      # at most 1 tick (40 instr.) per chunk
    per_step = costs[0] * 40 / 200
    assert 100 < per_step < 20000, per_step


def _mutated_frames(n, seed):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        kind = i % 6
        if kind == 0:                                   # random bytes, maybe with delimiters
            frames.append(rng.integers(0, 256, int(rng.integers(1, 40))).astype(np.uint8).tobytes())
        elif kind == 1:                                 # bit flips in a valid frame
            b = bytearray(P.encode_packet(P.STEP, i & 0xFF, bytes(4) + bytes(N_IN)))
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(b) - 1))] ^= 1 << int(rng.integers(0, 8))
            frames.append(bytes(b))
        elif kind == 2:                                 # truncated frame + delimiter
            w = P.encode_packet(P.RUN_CHUNK, i & 0xFF, bytes(4) + bytes(N_IN * 5))
            frames.append(w[: int(rng.integers(1, len(w) - 1))] + b"\x00")
        elif kind == 3 and i % 4 == 3:                  # oversized: no delimiter for > 256 bytes
            frames.append(bytes(rng.integers(1, 256, int(rng.integers(257, 300))).astype(np.uint8)) + b"\x00")
        elif kind == 3:                                 # a valid frame cut short, no delimiter
            w = P.encode_packet(P.HELLO, i & 0xFF, b"")
            frames.append(w[: int(rng.integers(1, len(w) - 1))])
        elif kind == 4:                                 # valid framing, bad semantics
            t = int(rng.choice([0x00, 0x33, 0x7F, P.STEP, P.RUN_CHUNK, P.HELLO, P.RUN_END]))
            body = rng.integers(0, 256, int(rng.integers(0, 60))).astype(np.uint8).tobytes()
            frames.append(P.encode_packet(t, i & 0xFF, body, version=int(rng.choice([1, 1, 2]))))
        else:                                           # wrong CRC with valid COBS
            raw = bytearray(P.cobs_decode(P.encode_packet(P.HELLO, i & 0xFF, b"")[:-1]))
            raw[-1] ^= 0x5A
            frames.append(P.cobs_encode(bytes(raw)) + b"\x00")
    return frames


@pytest.mark.slow
def test_malformed_frames_then_valid_hello(emu, dev):
    port = dev.port
    frames = _mutated_frames(3000, 1)
    received = bytearray()
    n_bytes = sum(map(len, frames))
    t0 = time.monotonic()
    for i in range(0, len(frames), 100):        # drain the device's ERROR replies as we go
        port.write(b"".join(frames[i:i + 100]))
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            data = port.read(4096)
            if data:
                received += data
                deadline = time.monotonic() + 0.05
    # the device handles frames in order: once it answers a marker HELLO, it has answered
    # every frame before it (a loaded machine slows QEMU down, so wait for that, not a clock)
    port.write(b"\x00" + P.encode_packet(P.HELLO, 0xA5, b""))
    d, end, marker = P.Deframer(), time.monotonic() + 120, False
    while time.monotonic() < end and not marker:
        data = port.read(4096)
        received += data
        for f in d.feed(data):
            try:
                pkt = P.decode_frame(f)
            except P.ProtocolError:     # the tail of a frame read before the marker was sent
                continue
            marker |= pkt.type == P.HELLO | P.REPLY and pkt.seq == 0xA5
    assert marker, "the device never answered the HELLO sent after the malformed frames"
    print(f"\nmalformed: {len(frames)} frames, {n_bytes} bytes in {time.monotonic() - t0:.1f} s")
    # everything the device sent back is a well-formed frame, mostly ERROR replies
    pkts = [P.decode_frame(f) for f in bytes(received).split(b"\x00") if f]
    assert len(pkts) > 2000
    assert all(p.type in (P.ERROR, P.BOOT, P.HELLO | P.REPLY, P.STEP | P.REPLY, P.RUN_CHUNK | P.REPLY,
                          P.RUN_END | P.REPLY) for p in pkts)
    codes = {P.ERROR_NAMES.get(p.body[0]) for p in pkts if p.type == P.ERROR}
    assert {"CRC", "COBS", "TRUNCATED", "OVERSIZE", "UNKNOWN_TYPE", "VERSION"} <= codes, codes
    assert emu.proc.poll() is None, "QEMU exited"
    info = dev.hello()
    assert info.model_id == MODEL_ID
    x = _seq(50, 5)
    np.testing.assert_array_equal(dev.run(x, step_logits=True).step_logits, ToyModel.run(x))


@pytest.mark.slow
def test_stream_eval_port_held_by_another_client(emu, dev, tmp_path):
    """QEMU's UART serves one client: with `dev` connected, stream_eval hears nothing. It says
    so after 1 s and exits 2 with one line naming the likely cause (before: 21 s, exit 3)."""
    assert dev.hello().model_id == MODEL_ID                # `dev` holds the port
    d = _toy_model_dir(tmp_path, n=1)
    t0 = time.monotonic()
    res = _stream_eval(emu, d, "--timeout", "0.5", "--retries", "1")
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert "waiting for the device" in res.stderr and "Traceback" not in res.stderr
    assert "no other program is connected to it (QEMU's UART" in res.stderr.splitlines()[-1]
    assert took < 1 + 2 * 0.5 + 10


def _toy_model_dir(tmp_path, n=12, T=30, model_bytes=None):
    d = tmp_path / "toy_int8"
    d.mkdir()
    (d / "model.tflite").write_bytes(model_bytes or (TOY / "model.tflite").read_bytes())
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (n, T, N_IN)).astype(np.int8)
    y = np.array([int(np.argmax(ToyModel.run(s).astype(np.int64).sum(0))) for s in x])
    y[::4] = (y[::4] + 1) % N_OUT                   # a few wrong labels: accuracy 75%
    np.savez(d / "test_data.npz", x=x, y=y)
    return d


def _stream_eval(emu, d, *extra):
    return subprocess.run([PY, str(ROOT / "host_tools" / "stream_eval.py"), "--port", emu.url,
                           "--model", str(d), "--reference",
                           str(TOY / "toy_model.py") + ":ToyModel", "--no-progress", *extra],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.slow
def test_stream_eval_cli(emu, dev, tmp_path):
    # runs after the tests above that use `dev`: stream_eval connects on its own and QEMU's
    # UART serves one client at a time
    dev.close()
    d = _toy_model_dir(tmp_path)
    res = _stream_eval(emu, d, "--json", str(tmp_path / "m.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "max |diff| : 0 int8 logits" in res.stdout and "agreement  : 100.00%" in res.stdout
    assert "device acc : 75.00%" in res.stdout and "instructions/step" in res.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["max_abs_logit_diff"] == 0 and m["n_sequences"] == 12 and m["cost_per_step_mean"] > 0

    res = _stream_eval(emu, d, "--fast", "--n", "3")
    assert res.returncode == 0 and "(last step)" in res.stdout, res.stdout + res.stderr

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    other = _toy_model_dir(wrong, n=2, model_bytes=b"some other model")
    res = _stream_eval(emu, other)
    assert res.returncode == 2 and "error: the device runs model id" in res.stderr
    assert f"make firmware flash BOARD=qemu-cm4 MODEL={other}" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr

    res = _stream_eval(emu, tmp_path / "missing")
    assert res.returncode == 2 and "not found" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_emulator_is_stopped(firmware):
    with Emulator(firmware) as e:
        pid = e.pid
        d = P.Device.open(e.url, timeout=3)
        assert d.hello().model_id == MODEL_ID
        d.close()
    assert e.proc is None and e.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    # also when the body raises
    with pytest.raises(RuntimeError):
        with Emulator(firmware) as e2:
            pid2 = e2.pid
            raise RuntimeError("boom")
    with pytest.raises(ProcessLookupError):
        os.kill(pid2, 0)


@pytest.mark.slow
def test_emulator_cli_ctrl_c(firmware):
    proc = subprocess.Popen([PY, str(ROOT / "host_tools" / "emulator.py"), str(firmware)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", url), url
        d = P.Device.open(url, timeout=3)
        assert d.hello().n_out == N_OUT
        d.close()
        qemu_pids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                   text=True).stdout.split()
        assert qemu_pids
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        for pid in qemu_pids:
            with pytest.raises(ProcessLookupError):
                os.kill(int(pid), 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_arm
def test_generic_cm_builds(tmp_path):
    res = _make("firmware", "BOARD=generic-cm", "MODEL_SRC=tests/fixtures/toy_model",
                f"BUILD_DIR={tmp_path}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "firmware.elf").is_file()
    res = _make("firmware", "BOARD=generic-cm", "MODEL_SRC=tests/fixtures/toy_model",
                f"BUILD_DIR={tmp_path / 'm0'}", "CPU_FLAGS=-mcpu=cortex-m0plus -mthumb")
    assert res.returncode == 0, res.stdout + res.stderr


def test_esp32s3_without_idf_fails_clearly(tmp_path):
    if shutil.which("idf.py"):
        pytest.skip("ESP-IDF is installed here")
    res = _make("firmware", "BOARD=esp32s3", "MODEL_SRC=tests/fixtures/toy_model",
                f"BUILD_DIR={tmp_path}")
    assert res.returncode != 0 and "idf.py (ESP-IDF) not found" in res.stderr


def test_missing_model_src_is_a_clear_error():
    res = _make("firmware", "BOARD=qemu-cm4")
    assert res.returncode != 0 and "set MODEL_SRC" in res.stderr
