"""One protocol conformance suite for every device target (docs/protocol.md, device side).

Every rule of the protocol that a device must keep is checked here, byte by byte with
hand-built frames (tests/raw_link.py), against every target this machine can run: the C app
built for the host, the firmware on the emulated Cortex-M4, Cortex-M0 and RISC-V boards (QEMU),
the MicroPython app on the unix port, and the Arduino library's mg_protocol sketch on the
emulated Arduino Mega 2560 (arduino-builder, qemu-system-avr). All run the toy model
(tests/fixtures/toy_model: C, MicroPython and its Python twin ToyModel, the reference), so a
target that breaks a rule fails here under its own id (`-k qemu-cm4`, `-k arduino-mega`).

Adding a target is adding one entry to TARGETS: a name, a launcher (a context manager factory
`launch(request, tmp_path) -> socket://HOST:PORT URL` of a device running the toy model; a new
QEMU board can use `qemu_firmware(board, machine=..., qemu=...)`), the board name its HELLO
starts with, its tick kind and units per tick, and the executables it needs. Under CI a missing executable fails
the run (tests/conftest.py); elsewhere the target is skipped.
"""
from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "fixtures" / "toy_model"
sys.path.insert(0, str(TOY))
sys.path.insert(0, str(ROOT / "tests"))

from mgrade_edge.host_tools import protocol as P  # noqa: E402
from raw_link import RawLink, drop_a_byte, error, raw_packet  # noqa: E402
from toy_model import MODEL_ID, N_IN, N_OUT, NAME, ToyModel  # noqa: E402

MAX = P.MAX_BODY


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    name: str
    launch: Callable          # (request, tmp_path) -> context manager yielding the device URL
    board: str                # HELLO board_name starts with this
    tick_kind: str            # HELLO tick kind
    needs: tuple = ()         # executables that must be installed
    units_per_tick: int = 1   # HELLO units_per_tick


@contextlib.contextmanager
def host_c(request, tmp):
    """The C app (mcu/app + mcu/boards/host) over its stdio, served on TCP."""
    from mgrade_edge.host_tools.stdio_device import StdioDevice

    res, out = request.getfixturevalue("host_build")
    assert res.returncode == 0, res.stdout + res.stderr
    with StdioDevice([str(out / "mg_host_device")]) as d:
        yield d.url


def qemu_firmware(board: str, **emulator_kw):
    """Launcher of `make -C mcu firmware BOARD=board` with the toy model, run by
    host_tools/emulator.Emulator(elf, board=board, **emulator_kw) (BOARDS names its QEMU)."""
    @contextlib.contextmanager
    def launch(request, tmp):
        from mgrade_edge.host_tools.emulator import Emulator

        res = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "firmware", f"BOARD={board}",
                              "MODEL_SRC=tests/fixtures/toy_model", f"BUILD_DIR={tmp}"],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        with Emulator(tmp / "firmware.elf", board=board, **emulator_kw) as e:
            yield e.url
    return launch


@contextlib.contextmanager
def micropython_unix(request, tmp):
    """mcu/micropython's app and framing with the toy model's mg_model.py, on the unix port."""
    from mgrade_edge.host_tools.micropython_unix import MicroPythonUnix

    for f in ("mg_app.py", "mg_proto.py"):
        shutil.copyfile(ROOT / "mcu" / "micropython" / f, tmp / f)
    shutil.copyfile(TOY / "micropython" / "mg_model.py", tmp / "mg_model.py")
    with MicroPythonUnix(tmp) as mp:
        yield mp.url
        assert mp.log_text() == "", mp.log_text()        # the app caught no exception


@contextlib.contextmanager
def arduino_mega(request, tmp):
    """The mg_protocol example of the toy model's Arduino library (convert/arduino.py with the
    toy model as its package, like --model-src), built by arduino-builder for the Mega 2560 and
    run on qemu-system-avr -M mega2560 (host_tools/emulator.Emulator, board arduino-mega)."""
    from mgrade_edge.convert.arduino import write_library
    from mgrade_edge.host_tools.arduino_build import (APT_HINT, build_example, have_toolchain,
                                                      qemu_skip_hazards)
    from mgrade_edge.host_tools.emulator import Emulator

    if not have_toolchain():                   # the AVR core (boards.txt) is no executable
        pytest.skip(f"arduino-mega: {APT_HINT}")
    lib = write_library(None, tmp / "lib", name="mgrade_toy", package_dir=TOY, make_zip=False)
    b = build_example(lib["dir"], "mg_protocol", tmp / "build", "mega", timeout=300)
    assert qemu_skip_hazards(b["elf"]) == []           # code the emulator would hang on
    with Emulator(b["elf"], board="arduino-mega") as e:
        yield e.url


def _micropython() -> str:
    from mgrade_edge.host_tools.micropython_unix import find_micropython
    return find_micropython() or "micropython"


TARGETS = [
    Target("host-c", host_c, "host (stdio)", "microseconds", ("gcc", "make")),
    Target("qemu-cm4", qemu_firmware("qemu-cm4"), "qemu-cm4", "instructions",
           ("arm-none-eabi-gcc", "qemu-system-arm"), units_per_tick=40),
    Target("micropython-unix", micropython_unix, "micropython", "microseconds",
           (_micropython(),)),
    # the other UART drivers: the micro:bit's nRF51 UART (Cortex-M0) and the RISC-V 16550
    Target("qemu-cm0", qemu_firmware("qemu-cm0"), "qemu-cm0", "instructions",
           ("arm-none-eabi-gcc", "qemu-system-arm"), units_per_tick=1),
    Target("qemu-rv32", qemu_firmware("qemu-rv32"), "qemu-rv32",
           "instructions", ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"), units_per_tick=1),
    # the Arduino library's sketch (mcu/boards/arduino): Timer1 at F_CPU / 8, 8 cycles a tick
    Target("arduino-mega", arduino_mega, "arduino-mega2560", "cycles",
           ("arduino-builder", "avr-gcc", "avr-size", "qemu-system-avr"), units_per_tick=8),
]


class Session:
    """A running target: its spec, URL and the frames it sent before the first HELLO reply."""

    def __init__(self, spec: Target, url: str):
        self.spec, self.url = spec, url
        with RawLink(url, timeout=60) as link:       # QEMU boots on the first connection
            self.hello = link.ask(P.HELLO, 0xB0)
            self.boot = link.skipped

    def link(self) -> RawLink:
        """A new connection, in sync: everything sent before is read and dropped."""
        link = RawLink(self.url)
        assert link.ask(P.HELLO, 0xB1).type == P.HELLO | P.REPLY
        return link


@pytest.fixture(scope="module", params=[pytest.param(t, id=t.name) for t in TARGETS])
def target(request, tmp_path_factory):
    spec: Target = request.param
    missing = [n for n in spec.needs if shutil.which(n) is None]
    if missing:
        pytest.skip(f"{spec.name}: {', '.join(missing)} not installed")
    with spec.launch(request, tmp_path_factory.mktemp(spec.name)) as url:
        yield Session(spec, url)


@pytest.fixture
def link(target):
    with target.link() as ln:
        yield ln


# ----------------------------------------------------------------------------- helpers
def _seq(T, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (T, N_IN)).astype(np.int8)


def u32(v):
    return struct.pack("<I", v)


def steps_of(pkt):
    assert pkt.type & P.REPLY and pkt.type != P.ERROR, error(pkt)
    return struct.unpack_from("<I", pkt.body)[0]


def run_end(link, seq=0x70, first=None):
    """RUN_END's fields: (steps, ticks, n_out, first, count, sums int64, last int8)."""
    p = link.ask(P.RUN_END, seq, b"" if first is None else struct.pack("<H", first))
    assert p.type == P.RUN_END | P.REPLY, error(p)
    steps, lo, hi, n_out, fst, count = struct.unpack_from("<IIIHHH", p.body)
    assert len(p.body) == 18 + 5 * count
    sums = np.frombuffer(p.body, "<i4", count, 18).astype(np.int64)
    last = np.frombuffer(p.body, np.int8, count, 18 + 4 * count)
    return steps, lo | (hi << 32), n_out, fst, count, sums, last


def logits_of(pkt, k=1):
    return np.frombuffer(pkt.body, np.int8, k * N_OUT, 4).reshape(k, N_OUT)


# ----------------------------------------------------------------------------- BOOT, HELLO
def test_boot_frame_first(target):
    """The first frame a target sends is BOOT (seq 0, body: the protocol version)."""
    boots = [p for p in target.boot if isinstance(p, P.Packet)]
    assert boots and boots[0] == P.Packet(P.BOOT, 0, bytes([P.PROTO_VERSION]))


def test_hello(target, link):
    p = target.hello
    assert p.type == P.HELLO | P.REPLY and p.seq == 0xB0
    info = P.DeviceInfo.parse(p.body)
    assert (info.proto_version, info.max_body, info.rx_buffer) == (1, MAX, P.RX_BUFFER)
    assert (info.model_id, info.n_in, info.n_out, info.n_macs_per_step) == \
        (MODEL_ID, N_IN, N_OUT, N_IN * N_OUT)
    assert info.board.startswith(target.spec.board) and info.model_name == NAME
    assert (info.tick_kind, info.units_per_tick) == (target.spec.tick_kind,
                                                     target.spec.units_per_tick)
    n_board = p.body[26]
    assert 26 + 1 + n_board + 1 + len(NAME) == len(p.body) and n_board <= 64
    assert error(link.ask(P.HELLO, 3, b"\x00")) == ("BAD_LENGTH", P.HELLO, 0)


# ----------------------------------------------------------------------------- state machine
def test_reset_and_run_begin(link):
    x = _seq(3, 1)
    assert link.ask(P.RESET, 1).body == b"\x00"
    for t in range(3):
        assert steps_of(link.ask(P.STEP, 2 + t, u32(t) + x[t].tobytes())) == t + 1
    assert run_end(link)[0] == 3
    assert link.ask(P.RUN_BEGIN, 5, b"\xff").body == b"\x01"      # only bit 0 is a flag
    steps, ticks, n_out, first, count, sums, last = run_end(link, 6)
    assert (steps, ticks, n_out, first, count) == (0, 0, N_OUT, 0, N_OUT)
    assert not sums.any() and not last.any()
    assert link.ask(P.RUN_BEGIN, 7, b"\x00").body == b"\x00"
    for t in range(2):
        link.ask(P.STEP, 8 + t, u32(t) + x[t].tobytes())
    assert link.ask(P.RESET, 10).body == b"\x00"                  # RESET clears the flags too
    assert run_end(link, 11)[:2] == (0, 0)
    assert error(link.ask(P.RESET, 12, b"\x00")) == ("BAD_LENGTH", P.RESET, 0)
    assert error(link.ask(P.RUN_BEGIN, 13, b"")) == ("BAD_LENGTH", P.RUN_BEGIN, 1)
    assert error(link.ask(P.RUN_BEGIN, 14, b"\x01\x00")) == ("BAD_LENGTH", P.RUN_BEGIN, 1)


def test_steps_match_the_twin_and_run_end_changes_nothing(link):
    x = _seq(40, 2)
    ref = ToyModel.run(x)
    link.ask(P.RESET, 1)
    for t in range(len(x)):
        p = link.ask(P.STEP, 2 + t, u32(t) + x[t].tobytes())
        assert p.type == P.STEP | P.REPLY and len(p.body) == 4 + N_OUT
        assert steps_of(p) == t + 1
        np.testing.assert_array_equal(logits_of(p)[0], ref[t])
    a, b = run_end(link, 60), run_end(link, 61)
    assert a[0] == 40 and a[2:5] == (N_OUT, 0, N_OUT)
    np.testing.assert_array_equal(a[5], ref.astype(np.int64).sum(0))
    np.testing.assert_array_equal(a[6], ref[-1])
    assert a[:5] == b[:5] and (a[5] == b[5]).all() and (a[6] == b[6]).all()


def test_run_chunks_match_the_twin(link):
    x = _seq(58, 3)
    ref = ToyModel.run(x)
    k_logits = (MAX - 4) // N_OUT                 # 23 frames with every step's logits
    assert link.ask(P.RUN_BEGIN, 1, b"\x01").body == b"\x01"
    p = link.ask(P.RUN_CHUNK, 2, u32(0) + x[:k_logits].tobytes())
    assert steps_of(p) == k_logits and len(p.body) == 4 + k_logits * N_OUT
    np.testing.assert_array_equal(logits_of(p, k_logits), ref[:k_logits])
    # one frame more and the reply would not fit 240 bytes: TOO_LARGE, nothing runs
    big = u32(k_logits) + x[k_logits:2 * k_logits + 1].tobytes()
    assert error(link.ask(P.RUN_CHUNK, 3, big)) == ("TOO_LARGE", P.RUN_CHUNK, N_OUT)
    assert run_end(link, 4)[0] == k_logits
    # the mean readout: a chunk of the largest k = (240 - 4) // n_in frames, reply = steps only
    link.ask(P.RUN_BEGIN, 5, b"\x00")
    k = (MAX - 4) // N_IN
    p = link.ask(P.RUN_CHUNK, 6, u32(0) + x[:k].tobytes())
    assert p.body == u32(k)
    p = link.ask(P.RUN_CHUNK, 7, u32(k) + x[k:].tobytes())
    assert p.body == u32(len(x))
    steps, _, _, _, _, sums, last = run_end(link, 8)
    assert steps == len(x)
    np.testing.assert_array_equal(sums, ref.astype(np.int64).sum(0))
    np.testing.assert_array_equal(last, ref[-1])


def test_run_end_pages(link):
    x = _seq(5, 4)
    ref = ToyModel.run(x)
    link.ask(P.RUN_BEGIN, 1, b"\x00")
    link.ask(P.RUN_CHUNK, 2, u32(0) + x.tobytes())
    steps, _, n_out, first, count, sums, last = run_end(link, 3, first=3)
    assert (steps, n_out, first, count) == (5, N_OUT, 3, N_OUT - 3)
    np.testing.assert_array_equal(sums, ref.astype(np.int64).sum(0)[3:])
    np.testing.assert_array_equal(last, ref[-1, 3:])
    for f in (N_OUT, 0xFFFF):
        assert run_end(link, 4, first=f)[2:5] == (N_OUT, f, 0)
    assert error(link.ask(P.RUN_END, 5, b"\x00")) == ("BAD_LENGTH", P.RUN_END, 2)


def test_device_client_runs_match_the_twin(target):
    """host_tools/protocol.Device against the target: run (per-step logits and mean
    readout, chunked as the host picks) and step."""
    with P.Device.open(target.url, timeout=10.0) as dev:
        assert dev.hello().model_id == MODEL_ID
        for T in (1, 23, 24, 29, 300):         # around the chunk sizes 23 (logits) and 29
            x = _seq(T, T)
            ref = ToyModel.run(x)
            res = dev.run(x, step_logits=True)
            np.testing.assert_array_equal(res.step_logits, ref)
            res = dev.run(x, step_logits=False)
            assert res.steps == T
            np.testing.assert_array_equal(res.sums, ref.astype(np.int64).sum(0))
            np.testing.assert_array_equal(res.last_logits, ref[-1])
        x = _seq(6, 5)
        dev.reset_state()
        for t, want in enumerate(ToyModel.run(x)):
            np.testing.assert_array_equal(dev.step(x[t]), want)


# ----------------------------------------------------------------------------- BAD_OFFSET / BAD_LENGTH
def test_bad_offset_and_bad_length_execute_nothing(link):
    x = _seq(4, 6)
    link.ask(P.RESET, 1)
    link.ask(P.STEP, 2, u32(0) + x[0].tobytes())
    for seq, t in ((3, 2), (4, 0), (5, 0xFFFFFFFF)):
        assert error(link.ask(P.STEP, seq, u32(t) + x[1].tobytes())) == ("BAD_OFFSET", P.STEP, 1)
        assert error(link.ask(P.RUN_CHUNK, seq + 10, u32(t) + x[1:].tobytes())) == \
            ("BAD_OFFSET", P.RUN_CHUNK, 1)
    for seq, body in ((20, u32(1) + x[1:3].tobytes()),         # STEP carries one frame
                      (21, u32(1) + x[1, :-1].tobytes()),      # a frame short
                      (22, u32(1)), (23, b"\x01\x00\x00")):    # no frame, no t
        assert error(link.ask(P.STEP, seq, body)) == ("BAD_LENGTH", P.STEP, N_IN), seq
    for seq, body in ((24, u32(1) + x[1:].tobytes()[:-1]), (25, u32(1)), (26, b"")):
        assert error(link.ask(P.RUN_CHUNK, seq, body)) == ("BAD_LENGTH", P.RUN_CHUNK, N_IN), seq
    assert error(link.ask(0x33, 27)) == ("UNKNOWN_TYPE", 0x33, 0)
    assert error(link.ask(0x00, 28)) == ("UNKNOWN_TYPE", 0x00, 0)
    assert error(link.ask(P.STEP, 29, u32(1) + x[1].tobytes(), version=2)) == \
        ("VERSION", P.STEP, P.PROTO_VERSION)
    assert run_end(link, 30)[0] == 1


# ----------------------------------------------------------------------------- the reply cache
def test_cache_answers_only_a_true_retransmission_of_step(link):
    x = _seq(2, 7)
    ref = ToyModel.run(x)
    link.ask(P.RESET, 10)
    step0 = raw_packet(P.STEP, 11, u32(0) + x[0].tobytes())
    first = link.ask_wire(step0, 11)
    again = link.ask_wire(step0, 11)                  # retransmission: same bytes, same seq
    assert first.type == again.type == P.STEP | P.REPLY and first.body == again.body
    assert steps_of(first) == 1
    np.testing.assert_array_equal(logits_of(first)[0], ref[0])
    # another frame at the same t (as a new request, or under the old seq), the same frame
    # under a new seq: none is the request just executed, none gets its reply
    for seq, frame in ((12, x[1]), (11, x[1]), (13, x[0])):
        assert error(link.ask(P.STEP, seq, u32(0) + frame.tobytes())) == \
            ("BAD_OFFSET", P.STEP, 1), seq
    assert link.ask_wire(step0, 11).body == first.body        # still cached, not stepped
    steps, _, _, _, _, sums, _ = run_end(link, 14)
    assert steps == 1
    np.testing.assert_array_equal(sums, ref[0].astype(np.int64))
    # t is part of the request: the same frame under the same seq at t = 1 is new, and runs
    p = link.ask(P.STEP, 11, u32(1) + x[0].tobytes())
    assert steps_of(p) == 2
    np.testing.assert_array_equal(logits_of(p)[0], ToyModel.run(x[[0, 0]])[1])


def test_cache_answers_only_a_true_retransmission_of_run_chunk(link):
    x = _seq(10, 8)
    assert link.ask(P.RUN_BEGIN, 20, b"\x01").body == b"\x01"
    chunk = raw_packet(P.RUN_CHUNK, 21, u32(0) + x[:5].tobytes())
    first = link.ask_wire(chunk, 21)
    assert link.ask_wire(chunk, 21).body == first.body
    np.testing.assert_array_equal(logits_of(first, 5), ToyModel.run(x[:5]))
    for seq, frames in ((22, x[5:]), (21, x[5:]), (23, x[:5]), (21, x[:4]), (21, x[:6])):
        assert error(link.ask(P.RUN_CHUNK, seq, u32(0) + frames.tobytes())) == \
            ("BAD_OFFSET", P.RUN_CHUNK, 5), (seq, len(frames))
    # a STEP with the chunk's first frame is another request too
    assert error(link.ask(P.STEP, 21, u32(0) + x[0].tobytes())) == ("BAD_OFFSET", P.STEP, 5)
    steps, _, _, _, _, sums, _ = run_end(link, 24)
    assert steps == 5                                 # stepped once, not twice
    np.testing.assert_array_equal(sums, ToyModel.run(x[:5]).astype(np.int64).sum(0))


def test_cache_holds_until_the_next_step_or_reset(link):
    """HELLO and RUN_END leave the cache alone; a later step or a reset empties it."""
    x = _seq(3, 9)
    link.ask(P.RESET, 30)
    s0 = raw_packet(P.STEP, 31, u32(0) + x[0].tobytes())
    first = link.ask_wire(s0, 31)
    link.ask(P.HELLO, 32)
    run_end(link, 33)
    assert link.ask_wire(s0, 31).body == first.body
    link.ask(P.STEP, 34, u32(1) + x[1].tobytes())
    assert error(link.ask_wire(s0, 31)) == ("BAD_OFFSET", P.STEP, 2)   # only the last is kept
    s2 = raw_packet(P.STEP, 35, u32(2) + x[2].tobytes())
    link.ask_wire(s2, 35)
    link.ask(P.RESET, 36)
    assert error(link.ask_wire(s2, 35)) == ("BAD_OFFSET", P.STEP, 0)
    assert run_end(link, 37)[0] == 0


def _collide(ptype, seq, body, target_crc, fix_at):
    """body with bytes fix_at, fix_at + 1 XORed so that the packet's CRC is target_crc
    (CRC-16 is linear over GF(2): solve the 16 x 16 system by enumeration)."""
    head = struct.pack("<BBBH", P.PROTO_VERSION, ptype, seq, len(body))
    need = P.crc16_ccitt(head + bytes(body)) ^ target_crc
    n = len(head) + len(body)
    cols = []
    for bit in range(16):
        d = bytearray(n)
        d[len(head) + fix_at + bit // 8] = 1 << (bit % 8)
        cols.append(P.crc16_ccitt(bytes(d), 0))
    m = np.arange(1 << 16)
    v = np.bitwise_xor.reduce(((m[:, None] >> np.arange(16)) & 1) * np.array(cols), axis=1)
    (sol,) = np.nonzero(v == need)[0]
    out = bytearray(body)
    out[fix_at] ^= sol & 0xFF
    out[fix_at + 1] ^= sol >> 8
    assert P.crc16_ccitt(head + bytes(out)) == target_crc
    return bytes(out)


def test_cache_is_not_fooled_by_a_crc_collision(link):
    """Requests crafted to have the very packet CRC of the executed STEP: another frame under
    the same seq, another seq, and another t. Only byte-identical requests hit the cache."""
    x = _seq(3, 12)
    link.ask(P.RESET, 39)
    body0 = u32(0) + x[0].tobytes()
    assert steps_of(link.ask(P.STEP, 40, body0)) == 1
    crc0 = P.crc16_ccitt(struct.pack("<BBBH", 1, P.STEP, 40, len(body0)) + body0)
    other = bytearray(body0)
    other[4] ^= 0x01                                       # another frame at t = 0
    for seq in (40, 41):
        twin = _collide(P.STEP, seq, other, crc0, fix_at=6)
        assert twin != body0
        assert error(link.ask(P.STEP, seq, twin)) == ("BAD_OFFSET", P.STEP, 1), seq
    later = _collide(P.STEP, 40, u32(1) + x[1].tobytes(), crc0, fix_at=6)
    p = link.ask(P.STEP, 40, later)                        # t = 1: new, and it runs
    assert steps_of(p) == 2
    frames = np.stack([x[0], np.frombuffer(later, np.int8, N_IN, 4)])
    np.testing.assert_array_equal(logits_of(p)[0], ToyModel.run(frames)[1])


# ----------------------------------------------------------------------------- size limits
def test_bodies_of_241_to_248_bytes_are_refused(link):
    """An intact packet with len 241..248 fits the 256-byte receive buffer: OVERSIZE with its
    seq and type and detail 240, and nothing runs; 240 bytes are within the limit."""
    rng = np.random.default_rng(3)
    link.ask(P.RUN_BEGIN, 30, b"\x00")
    for n in range(241, 249):
        wire = raw_packet(P.RUN_CHUNK, n - 200, u32(0) + bytes(rng.integers(1, 256, n - 4, np.uint8)))
        assert len(wire) - 1 <= P.RX_BUFFER
        assert error(link.ask_wire(wire, n - 200)) == ("OVERSIZE", P.RUN_CHUNK, MAX), n
    assert error(link.ask(P.STEP, 60, u32(0) + bytes(244))) == ("OVERSIZE", P.STEP, MAX)
    assert run_end(link, 61)[0] == 0
    # 240 bytes pass the size check (a RUN_CHUNK of 29.5 frames: only the length is wrong)
    assert error(link.ask(P.RUN_CHUNK, 62, bytes(MAX))) == ("BAD_LENGTH", P.RUN_CHUNK, N_IN)


def test_frame_over_the_receive_buffer(link):
    """More than 256 bytes before a delimiter: OVERSIZE (detail 240), named by the frame's
    intact start; the next frame is answered."""
    body = u32(0) + bytes(np.random.default_rng(4).integers(1, 256, 300, np.uint8))
    wire = raw_packet(P.RUN_CHUNK, 77, body)
    assert len(wire) - 1 > P.RX_BUFFER
    assert error(link.ask_wire(wire, 77)) == ("OVERSIZE", P.RUN_CHUNK, MAX)
    junk = bytes(np.random.default_rng(5).integers(1, 256, 600, np.uint8)) + b"\x00"
    link.send(junk)
    assert link.ask(P.HELLO, 78).type == P.HELLO | P.REPLY
    errs = [error(p) for p in link.skipped if isinstance(p, P.Packet)]
    assert [e[0] for e in errs] == ["OVERSIZE"] and errs[0][2] == MAX


# ----------------------------------------------------------------------------- frame errors
def test_frame_errors_name_the_frames_seq_and_type(link):
    x = _seq(2, 13)
    link.ask(P.RESET, 1)
    body = u32(0) + x[0].tobytes()
    cases = [("CRC", P.STEP, 90, raw_packet(P.STEP, 90, body, crc_xor=0x5A5A)),
             ("TRUNCATED", P.STEP, 91, raw_packet(P.STEP, 91, body, length=len(body) + 1)),
             ("TRUNCATED", P.STEP, 92, raw_packet(P.STEP, 92, body, length=len(body) - 1)),
             ("COBS", P.STEP, 93, drop_a_byte(raw_packet(P.STEP, 93, body))),
             ("COBS", P.RUN_CHUNK, 94, drop_a_byte(raw_packet(P.RUN_CHUNK, 94, u32(0) + x.tobytes()))),
             ("CRC", 0x42, 95, raw_packet(0x42, 95, b"", crc_xor=1))]
    for name, ptype, seq, wire in cases:
        assert error(link.ask_wire(wire, seq)) == (name, ptype, 0), (name, seq)
    # too short to hold a header: named seq 0, type 0 where they cannot be read
    assert error(link.ask_wire(P.cobs_encode(b"\x01\x03") + b"\x00", 0)) == ("TRUNCATED", 0, 0)
    assert run_end(link, 2)[0] == 0                         # none of them ran
    assert steps_of(link.ask(P.STEP, 3, body)) == 1


def test_device_to_host_types_are_ignored(link):
    """A frame of a reply type (an echo of the device's own output) gets no answer."""
    link.send(b"\x00" + P.encode_packet(P.STEP | P.REPLY, 50, u32(0) + bytes(N_OUT)) +
              b"\x00" + P.encode_packet(P.ERROR, 51, bytes(6)) +
              b"\x00" + P.encode_packet(P.BOOT, 0, b"\x01"))
    assert link.ask(P.HELLO, 52).type == P.HELLO | P.REPLY
    assert link.skipped == []


# ----------------------------------------------------------------------------- resync
def test_resync_after_garbage_and_empty_frames(link):
    rng = np.random.default_rng(14)
    garbage = bytes(rng.integers(1, 256, 37, np.uint8))     # line noise, no delimiter
    link.send(garbage)
    p = link.ask(P.HELLO, 60)                               # its leading 0x00 ends the noise
    assert p.type == P.HELLO | P.REPLY
    errs = [p for p in link.skipped if isinstance(p, P.Packet)]
    assert len(errs) == 1 and P._parse_error(errs[0].body)[0] in P.FRAME_ERRORS
    link.send(b"\x00" * 50)                                 # empty frames: no answer
    assert link.ask(P.HELLO, 61).type == P.HELLO | P.REPLY and link.skipped == []
    # a frame cut short by line noise, then the request again: answered once, in sync
    x = _seq(1, 15)
    link.ask(P.RESET, 62)
    wire = raw_packet(P.STEP, 63, u32(0) + x[0].tobytes())
    link.send(b"\x00" + wire[:7])
    assert error(link.ask_wire(wire, 63)) == ("TRUNCATED", P.STEP, 0)    # the cut one
    p = link.answer(63)
    assert steps_of(p) == 1 and link.skipped == []
    assert run_end(link, 64)[0] == 1


# ----------------------------------------------------------------------------- disconnects
def test_disconnect_mid_frame_then_reconnect(target):
    """A client that hangs up in the middle of a frame: the next client's leading delimiter
    ends that frame (at most a frame-level error), the device state is kept."""
    x = _seq(4, 16)
    with target.link() as a:
        a.ask(P.RESET, 1)
        for t in range(3):
            a.ask(P.STEP, 2 + t, u32(t) + x[t].tobytes())
        wire = raw_packet(P.STEP, 9, u32(3) + x[3].tobytes())
        a.send(b"\x00" + wire[:len(wire) // 2])
    time.sleep(0.2)
    with RawLink(target.url) as b:
        p = b.ask(P.RUN_END, 10)
        assert struct.unpack_from("<I", p.body)[0] == 3
        for s in b.skipped:            # at most the cut frame's error, naming it if it can
            assert isinstance(s, P.Packet) and s.type == P.ERROR, s
            code, req, _ = P._parse_error(s.body)
            assert code in P.FRAME_ERRORS and (s.seq, req) in ((9, P.STEP), (0, 0)), s
        assert steps_of(b.ask_wire(wire, 9)) == 4


def test_disconnect_before_the_reply_then_retransmit(target):
    """A client that sends a STEP and hangs up before the reply; the next client sends the same
    bytes again: the same reply (the cache, or the reply kept for it), one step only."""
    x = _seq(2, 17)
    ref = ToyModel.run(x)
    with target.link() as a:
        a.ask(P.RESET, 1)
        wire = raw_packet(P.STEP, 2, u32(0) + x[0].tobytes())
        a.send(b"\x00" + wire)
    time.sleep(0.2)
    with RawLink(target.url) as b:
        p = b.ask_wire(wire, 2)
        assert steps_of(p) == 1
        np.testing.assert_array_equal(logits_of(p)[0], ref[0])
        assert run_end(b, 3)[0] == 1
        p = b.ask(P.STEP, 4, u32(1) + x[1].tobytes())
        np.testing.assert_array_equal(logits_of(p)[0], ref[1])
