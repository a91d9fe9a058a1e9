"""Host side of the serial protocol: CRC/COBS/packet codecs, and the Device client against a
Python stand-in device (over a real TCP socket, as with QEMU) with scripted faults. Every
test is bounded: the client either recovers or raises a clear exception."""
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "toy_model"))

from mgrade_edge.host_tools import protocol as P  # noqa: E402
from toy_model import MODEL_ID, N_IN, N_OUT, ToyModel, ToyState  # noqa: E402


# ----------------------------------------------------------------------------- codecs
def test_crc16_vectors():
    assert P.crc16_ccitt(b"123456789") == 0x29B1          # CRC-16/CCITT-FALSE check value
    assert P.crc16_ccitt(b"A") == 0xB915
    assert P.crc16_ccitt(b"") == 0xFFFF
    # incremental == one shot
    assert P.crc16_ccitt(b"56789", P.crc16_ccitt(b"1234")) == 0x29B1


SEQ254 = bytes(range(1, 255))
COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (SEQ254, b"\xff" + SEQ254),                                     # exactly one full block
    (b"\x00" + SEQ254, b"\x01\xff" + SEQ254),
    (bytes(range(1, 256)), b"\xff" + SEQ254 + b"\x02\xff"),          # 255 non-zero bytes
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize("raw,enc", COBS_VECTORS)
def test_cobs_vectors(raw, enc):
    assert P.cobs_encode(raw) == enc
    assert P.cobs_decode(enc) == raw


def test_cobs_accepts_non_minimal_full_block():
    assert P.cobs_decode(b"\xff" + SEQ254 + b"\x01") == SEQ254


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x05\x11\x22", b"\x03\x11\x00", b"\x02\x11\x00\x01"])
def test_cobs_rejects_malformed(bad):
    with pytest.raises(P.FrameError):
        P.cobs_decode(bad)


def test_cobs_random_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(0, 700))
        p0 = rng.random()
        raw = np.where(rng.random(n) < p0, 0, rng.integers(1, 256, n)).astype(np.uint8).tobytes()
        enc = P.cobs_encode(raw)
        assert 0 not in enc and len(enc) <= n + n // 254 + 1
        assert P.cobs_decode(enc) == raw


def test_packet_round_trip_and_limits():
    for body in (b"", b"\x00" * 10, bytes(range(240))):
        wire = P.encode_packet(P.STEP, 200, body)
        assert wire.endswith(b"\x00") and wire.count(0) == 1
        assert len(wire) <= P.MAX_WIRE
        pkt = P.decode_frame(wire[:-1])
        assert (pkt.type, pkt.seq, pkt.body, pkt.version) == (P.STEP, 200, body, P.PROTO_VERSION)
    with pytest.raises(ValueError):
        P.encode_packet(P.STEP, 0, bytes(241))
    assert len(P.encode_packet(P.RUN_CHUNK, 1, bytes(240))) <= 256   # fits a 256-byte RX buffer


def test_decode_frame_errors():
    wire = bytearray(P.encode_packet(P.HELLO, 7, b"abc")[:-1])
    raw = P.cobs_decode(bytes(wire))
    bad_crc = bytearray(raw)
    bad_crc[-1] ^= 0x01
    with pytest.raises(P.FrameError, match="CRC"):
        P.decode_frame(P.cobs_encode(bytes(bad_crc)))
    with pytest.raises(P.FrameError, match="length"):
        P.decode_frame(P.cobs_encode(raw[:-3] + raw[-2:]))          # a body byte missing
    with pytest.raises(P.FrameError, match="shorter"):
        P.decode_frame(P.cobs_encode(raw[:4]))


def test_deframer_garbage_split_and_oversize():
    d = P.Deframer(max_frame=50)
    a, b = P.encode_packet(P.HELLO, 1), P.encode_packet(P.RESET, 2)
    stream = b"\x13\x37garbage\x00" + a[:3]
    frames = d.feed(stream) + d.feed(a[3:] + b"\x00\x00" + b)
    assert [P.decode_frame(f).seq for f in frames[1:]] == [1, 2]
    with pytest.raises(P.FrameError):
        P.decode_frame(frames[0])
    frames = d.feed(b"\x01" * 120) + d.feed(b"\x01" * 10 + b"\x00" + a)
    assert len(frames) == 1 and P.decode_frame(frames[0]).seq == 1 and d.oversized == 1


# ----------------------------------------------------------------------------- stand-in device
class FakeDevice(threading.Thread):
    """The device side of the protocol in Python (mirrors mcu/app/mg_app.c) on a TCP socket,
    running the toy model. `fault(dev, req, reply_wire) -> bytes | None` may rewrite, drop
    (None) or decorate every reply; `drop_request(dev, req) -> bool` ignores a request."""

    def __init__(self, fault=None, drop_request=None, send_boot=True):
        super().__init__(daemon=True)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self.fault, self.drop_request, self.send_boot = fault, drop_request, send_boot
        self.model = ToyState()
        self.n_requests = 0
        self.model_steps_executed = 0
        self.stop_flag = threading.Event()
        self.conn = None
        self.reset()
        self.start()

    def reset(self):
        self.model.reset()
        self.steps, self.sums, self.last = 0, np.zeros(N_OUT, np.int64), np.zeros(N_OUT, np.int8)
        self.flags, self.cache = 0, None

    def send(self, data: bytes):
        if data and self.conn is not None:
            self.conn.sendall(data)

    def boot(self):
        """Simulate a device restart."""
        self.reset()
        self.send(b"\x00" + P.encode_packet(P.BOOT, 0, bytes([P.PROTO_VERSION])))

    def run(self):
        self.srv.settimeout(5)
        try:
            self.conn, _ = self.srv.accept()
        except OSError:
            return
        self.conn.settimeout(0.05)
        if self.send_boot:
            self.boot()
        d = P.Deframer(max_frame=256)
        while not self.stop_flag.is_set():
            try:
                data = self.conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            for frame in d.feed(data):
                try:
                    req = P.decode_frame(frame)
                except P.FrameError:
                    self.send(b"\x00" + P.encode_packet(P.ERROR, 0, struct.pack("<BBI", P.E_CRC, 0, 0)))
                    continue
                self.n_requests += 1
                if self.drop_request and self.drop_request(self, req):
                    continue
                reply = self.handle(req)
                if self.fault is not None:
                    reply = self.fault(self, req, reply)
                if reply:
                    try:
                        self.send(reply)
                    except OSError:
                        return

    def err(self, req, code, detail=0):
        return b"\x00" + P.encode_packet(P.ERROR, req.seq, struct.pack("<BBI", code, req.type, detail))

    def handle(self, req: P.Packet) -> bytes:
        t, body = req.type, req.body
        ok = lambda b: b"\x00" + P.encode_packet(t | P.REPLY, req.seq, b)   # noqa: E731
        if t == P.HELLO:
            board, name = b"python-fake", b"toy-fixture"
            return ok(struct.pack("<BBHI", 1, 1, P.MAX_BODY, 40) + MODEL_ID
                      + struct.pack("<HHIH", N_IN, N_OUT, N_IN * N_OUT, 256)
                      + bytes([len(board)]) + board + bytes([len(name)]) + name)
        if t in (P.RESET, P.RUN_BEGIN):
            self.reset()
            if t == P.RUN_BEGIN:
                self.flags = body[0] & 1
            return ok(bytes([self.flags]))
        if t in (P.STEP, P.RUN_CHUNK):
            if len(body) < 4 + N_IN or (len(body) - 4) % N_IN:
                return self.err(req, P.E_BAD_LENGTH, N_IN)
            (off,) = struct.unpack_from("<I", body)
            k = (len(body) - 4) // N_IN
            if self.cache and self.cache[:3] == (t, req.seq, body) and self.cache[3] == self.steps:
                return ok(self.cache[4])              # a retransmission: the same bytes
            if off != self.steps:
                return self.err(req, P.E_BAD_OFFSET, self.steps)
            out = b""
            for j in range(k):
                self.last = self.model.step(np.frombuffer(body, np.int8, N_IN, 4 + j * N_IN))
                self.model_steps_executed += 1
                self.sums += self.last
                self.steps += 1
                if t == P.STEP or self.flags:
                    out += self.last.tobytes()
            rb = struct.pack("<I", self.steps) + out
            self.cache = (t, req.seq, body, self.steps, rb)
            return ok(rb)
        if t == P.RUN_END:
            first = struct.unpack("<H", body)[0] if len(body) == 2 else 0
            cnt = max(0, N_OUT - first)
            return ok(struct.pack("<IIIHHH", self.steps, 1000 * self.steps, 0, N_OUT, first, cnt)
                      + self.sums[first:].astype("<i4").tobytes() + self.last[first:].tobytes())
        return self.err(req, P.E_UNKNOWN_TYPE)

    def close(self):
        self.stop_flag.set()
        for s in (self.conn, self.srv):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass
        self.join(2)


@pytest.fixture
def make_device():
    made = []

    def make(timeout=0.3, retries=3, **kw):
        fake = FakeDevice(**kw)
        dev = P.Device.open(fake.url, timeout=timeout, retries=retries)
        made.append((fake, dev))
        return fake, dev

    yield make
    for fake, dev in made:
        dev.close()
        fake.close()


def _seq(T, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (T, N_IN)).astype(np.int8)


def _check_run(dev, x, step_logits=True):
    ref = ToyModel.run(x)
    res = dev.run(x, step_logits=step_logits)
    assert res.steps == len(x)
    np.testing.assert_array_equal(res.sums, ref.astype(np.int64).sum(0))
    np.testing.assert_array_equal(res.last_logits, ref[-1])
    if step_logits:
        np.testing.assert_array_equal(res.step_logits, ref)
    return res


def test_clean_link(make_device):
    fake, dev = make_device()
    info = dev.hello()
    assert (info.model_id, info.n_in, info.n_out, info.board) == (MODEL_ID, N_IN, N_OUT, "python-fake")
    assert info.tick_kind == "instructions" and info.units_per_tick == 40
    res = _check_run(dev, _seq(100))
    assert res.cost == 100 * 1000 * 40 and res.cost_per_step == 40000
    _check_run(dev, _seq(57, 1), step_logits=False)
    dev.reset_state()
    x = _seq(5, 2)
    for t, want in enumerate(ToyModel.run(x)):
        np.testing.assert_array_equal(dev.step(x[t]), want)
    assert fake.model_steps_executed == 100 + 57 + 5


def test_dropped_replies_are_retried_without_double_steps(make_device):
    state = {"n": 0}

    def drop_every_third(dev, req, reply):
        state["n"] += 1
        return None if state["n"] % 3 == 0 else reply

    fake, dev = make_device(fault=drop_every_third, timeout=0.15)
    x = _seq(200)
    _check_run(dev, x)
    dev.reset_state()
    for t, want in enumerate(ToyModel.run(x[:10])):
        np.testing.assert_array_equal(dev.step(x[t]), want)
    assert dev.stats["retransmits"] > 0
    assert fake.model_steps_executed == 210          # the reply cache answered every retry


def test_duplicate_replies_are_dropped(make_device):
    fake, dev = make_device(fault=lambda d, r, reply: reply + reply if reply else reply)
    _check_run(dev, _seq(150))
    _check_run(dev, _seq(20, 3))
    assert dev.stats["stale_replies"] > 0 and dev.stats["retransmits"] <= 1


def test_garbage_between_frames(make_device):
    rng = np.random.default_rng(5)

    def garbage(d, r, reply):
        junk = rng.integers(0, 256, int(rng.integers(1, 40))).astype(np.uint8).tobytes()
        return junk + (b"\x00" if rng.random() < 0.5 else b"") + reply + junk[:5]

    fake, dev = make_device(fault=garbage, timeout=0.2)
    _check_run(dev, _seq(120))
    assert dev.stats["bad_frames"] > 0


def test_corrupted_replies_and_requests(make_device):
    rng = np.random.default_rng(6)

    def corrupt(d, r, reply):
        if rng.random() < 0.2:
            b = bytearray(reply)
            b[int(rng.integers(0, len(b) - 1))] ^= 0x10
            return bytes(b)
        return reply

    def lose_request(d, req):
        return rng.random() < 0.1

    fake, dev = make_device(fault=corrupt, drop_request=lose_request, timeout=0.15, retries=6)
    _check_run(dev, _seq(150))
    assert dev.stats["retransmits"] > 0


def test_device_reset_mid_sequence_restarts_the_run(make_device):
    state = {"chunks": 0, "armed": True}

    def reboot_at_third_chunk(d, req):
        if req.type == P.RUN_CHUNK:
            state["chunks"] += 1
            if state["armed"] and state["chunks"] == 3:
                state["armed"] = False
                d.boot()                 # the device restarts and forgets the request
                return True
        return False

    fake, dev = make_device(drop_request=reboot_at_third_chunk)
    dev.hello()       # (the BOOT sent on connecting may or may not be seen: pyserial flushes input)
    boots = dev.stats["boots"]
    _check_run(dev, _seq(200))
    assert dev.stats["boots"] == boots + 1, dev.stats

    state.update(chunks=0, armed=True)
    with pytest.raises(P.DeviceReset, match="restarted"):
        dev.run(_seq(200), restarts=0)
    # the client is usable afterwards
    _check_run(dev, _seq(40, 9))


def test_device_reset_between_steps_is_detected(make_device):
    fake, dev = make_device()
    dev.reset_state()
    dev.step(_seq(1)[0])
    fake.reset()                      # someone else reset the device
    with pytest.raises(P.DeviceReset):
        dev.step(_seq(1)[0])


def test_silent_device_times_out_bounded(make_device):
    fake, dev = make_device(drop_request=lambda d, r: True, timeout=0.2, retries=2)
    t0 = time.monotonic()
    with pytest.raises(P.DeviceTimeout, match="no reply to HELLO"):
        dev.hello()
    assert time.monotonic() - t0 < 0.2 * 3 + 0.5


def test_device_error_reply(make_device):
    fake, dev = make_device()
    with pytest.raises(P.DeviceError) as ei:
        dev.request(0x33)
    assert ei.value.code == P.E_UNKNOWN_TYPE and "UNKNOWN_TYPE" in str(ei.value)
    with pytest.raises(ValueError, match="shape"):
        dev.step(np.zeros(N_IN + 1, np.int8))


def test_disconnect_mid_reply_raises_promptly(make_device):
    def half_then_hang_up(d, req, reply):
        if req.type == P.RUN_CHUNK:
            d.send(reply[: len(reply) // 2])
            d.conn.shutdown(socket.SHUT_RDWR)
            return None
        return reply

    fake, dev = make_device(fault=half_then_hang_up)
    t0 = time.monotonic()
    with pytest.raises(P.ProtocolError, match="disconnected|no reply"):
        dev.run(_seq(50))
    assert time.monotonic() - t0 < 3


def test_wrong_version_reply(make_device):
    def v2(d, req, reply):
        pkt = P.decode_frame(reply[1:-1])
        return P.encode_packet(pkt.type, pkt.seq, pkt.body, version=2)

    fake, dev = make_device(fault=v2)
    with pytest.raises(P.ProtocolError, match="version"):
        dev.hello()


def test_bad_port_is_a_clear_error():
    with pytest.raises(P.ProtocolError, match="cannot open"):
        P.Device.open("socket://127.0.0.1:1")
