"""Host side of the mgrade-edge serial protocol (specification: docs/protocol.md).

Framing: every packet is ``version u8 | type u8 | seq u8 | len u16 | body | crc16 u16``
(little-endian, CRC-16/CCITT-FALSE over version..body), COBS-encoded and terminated by 0x00.

    dev = Device.open("socket://127.0.0.1:4321")     # or "/dev/ttyUSB0", baud=115200
    info = dev.hello()                               # DeviceInfo: model id, n_in, n_out, board...
    res = dev.run(x_int8)                            # [T, n_in] -> RunResult (int32 sums, cost)
    logits = dev.step(frame_int8)                    # one step -> int8 [n_out]

Every request carries the device step index it expects, so all requests are idempotent: a
request whose reply is lost or corrupted is simply sent again (same sequence number, same
bytes), and the device answers a retransmitted STEP/RUN_CHUNK from its reply cache instead of
stepping twice. A damaged frame in either direction is sent again at once. When every reply of
a STEP/RUN_CHUNK is lost, the host asks the device its step count (RUN_END) before going on:
it never reuses a step index without knowing whether the lost request ran. Replies whose
sequence number does not match the outstanding request (duplicates, stale replies, garbage)
are dropped. All waits are bounded: failures raise ``DeviceTimeout``,
``DeviceError`` (the device answered ERROR), ``DeviceReset`` (the device restarted or was
reset by someone else mid-sequence) or ``ProtocolError`` (the base class of all of them).
"""
from __future__ import annotations

import math
import random
import struct
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

PROTO_VERSION = 1
HEADER = 5
CRC_BYTES = 2
MAX_BODY = 240
MAX_PACKET = HEADER + MAX_BODY + CRC_BYTES      # 247
MAX_WIRE = MAX_PACKET + 2                       # COBS overhead (1) + delimiter (1)
RX_BUFFER = 256                                 # device receive buffer (encoded bytes)

# message types
HELLO, RESET, STEP, RUN_BEGIN, RUN_CHUNK, RUN_END = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
REPLY = 0x80
BOOT = 0xFE
ERROR = 0xFF
TYPE_NAMES = {HELLO: "HELLO", RESET: "RESET_STATE", STEP: "STEP", RUN_BEGIN: "RUN_BEGIN",
              RUN_CHUNK: "RUN_CHUNK", RUN_END: "RUN_END", BOOT: "BOOT", ERROR: "ERROR"}
RUN_F_STEP_LOGITS = 0x01

# error codes
E_CRC, E_COBS, E_TRUNCATED, E_OVERSIZE = 1, 2, 3, 4
E_VERSION, E_UNKNOWN_TYPE, E_BAD_LENGTH, E_BAD_OFFSET, E_TOO_LARGE = 5, 6, 7, 8, 9
ERROR_NAMES = {E_CRC: "CRC", E_COBS: "COBS", E_TRUNCATED: "TRUNCATED", E_OVERSIZE: "OVERSIZE",
               E_VERSION: "VERSION", E_UNKNOWN_TYPE: "UNKNOWN_TYPE", E_BAD_LENGTH: "BAD_LENGTH",
               E_BAD_OFFSET: "BAD_OFFSET", E_TOO_LARGE: "TOO_LARGE"}
FRAME_ERRORS = frozenset({E_CRC, E_COBS, E_TRUNCATED, E_OVERSIZE})   # the frame never arrived intact
IDEMPOTENT = frozenset({HELLO, RESET, STEP, RUN_BEGIN, RUN_CHUNK, RUN_END})
TICK_KINDS = {0: "cycles", 1: "instructions", 2: "microseconds"}


def type_name(t: int) -> str:
    if t in TYPE_NAMES:
        return TYPE_NAMES[t]
    if t & REPLY and (t & ~REPLY) in TYPE_NAMES:
        return TYPE_NAMES[t & ~REPLY] + "_REPLY"
    return f"0x{t:02x}"


# ----------------------------------------------------------------------------- exceptions
class ProtocolError(Exception):
    """Base class: anything that went wrong talking to the device."""


class FrameError(ProtocolError):
    """A received frame is malformed (COBS, length or CRC)."""


class DeviceTimeout(ProtocolError, TimeoutError):
    """No valid reply within the timeout (after the allowed retries)."""


class DeviceError(ProtocolError):
    """The device answered ERROR."""

    def __init__(self, code: int, request: int, detail: int, message: str | None = None):
        self.code, self.request, self.detail = code, request, detail
        self.code_name = ERROR_NAMES.get(code, f"code {code}")
        super().__init__(message or f"device rejected {type_name(request)}: {self.code_name} "
                                    f"(detail {detail})")


class DeviceReset(ProtocolError):
    """The device's step count no longer matches the host's sequence: it restarted, another
    client reset it, or a request whose replies were all lost ran and its results are gone."""


# ----------------------------------------------------------------------------- CRC / COBS
def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode (minimal form; no delimiter). The result never contains 0x00."""
    out = bytearray([0])
    code_pos, code = 0, 1
    after_full = False
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos, code, after_full = len(out), 1, False
            out.append(0)
            continue
        out.append(b)
        code += 1
        after_full = False
        if code == 0xFF:
            out[code_pos] = code
            code_pos, code, after_full = len(out), 1, True
            out.append(0)
    if code == 1 and after_full:
        out.pop()                   # input ended right after a full 254-byte block
    else:
        out[code_pos] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block (no delimiter); raises FrameError when malformed."""
    if not data:
        raise FrameError("empty COBS frame")
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0:
            raise FrameError("0x00 inside a COBS frame")
        if code - 1 > n - i:
            raise FrameError("truncated COBS block")
        block = data[i:i + code - 1]
        if 0 in block:
            raise FrameError("0x00 inside a COBS frame")
        out += block
        i += code - 1
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ----------------------------------------------------------------------------- packets
@dataclass(frozen=True)
class Packet:
    type: int
    seq: int
    body: bytes = b""
    version: int = PROTO_VERSION


def encode_packet(ptype: int, seq: int, body: bytes = b"", version: int = PROTO_VERSION) -> bytes:
    """Packet -> wire bytes: COBS(packet) + 0x00."""
    body = bytes(body)
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes exceeds the {MAX_BODY}-byte limit")
    pkt = struct.pack("<BBBH", version & 0xFF, ptype & 0xFF, seq & 0xFF, len(body)) + body
    pkt += struct.pack("<H", crc16_ccitt(pkt))
    return cobs_encode(pkt) + b"\x00"


def decode_frame(frame: bytes) -> Packet:
    """One frame without its delimiter -> Packet; raises FrameError."""
    pkt = cobs_decode(frame)
    if len(pkt) < HEADER + CRC_BYTES:
        raise FrameError(f"frame of {len(pkt)} bytes is shorter than a header")
    version, ptype, seq, length = struct.unpack_from("<BBBH", pkt)
    if length + HEADER + CRC_BYTES != len(pkt):
        raise FrameError(f"length field {length} disagrees with the frame ({len(pkt)} bytes)")
    (crc,) = struct.unpack_from("<H", pkt, len(pkt) - CRC_BYTES)
    if crc != crc16_ccitt(pkt[:-CRC_BYTES]):
        raise FrameError("CRC mismatch")
    return Packet(ptype, seq, bytes(pkt[HEADER:-CRC_BYTES]), version)


class Deframer:
    """Splits a byte stream at 0x00 delimiters. Frames longer than max_frame are dropped
    whole (counted in .oversized); empty frames are skipped."""

    def __init__(self, max_frame: int = 4 * MAX_WIRE):
        self.max_frame = max_frame
        self.buf = bytearray()
        self.dropping = False
        self.oversized = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for chunk_end, part in self._split(data):
            if self.dropping:
                if chunk_end:
                    self.dropping = False
                continue
            self.buf += part
            if len(self.buf) > self.max_frame:
                self.buf.clear()
                self.oversized += 1
                self.dropping = not chunk_end
                continue
            if chunk_end:
                if self.buf:
                    frames.append(bytes(self.buf))
                self.buf.clear()
        return frames

    @staticmethod
    def _split(data: bytes):
        parts = bytes(data).split(b"\x00")
        for i, part in enumerate(parts):
            yield i < len(parts) - 1, part

    def reset(self) -> None:
        self.buf.clear()
        self.dropping = False


# ----------------------------------------------------------------------------- results
@dataclass
class DeviceInfo:
    proto_version: int
    tick_kind: str
    units_per_tick: int
    max_body: int
    model_id: bytes
    n_in: int
    n_out: int
    n_macs_per_step: int
    rx_buffer: int
    board: str
    model_name: str

    @classmethod
    def parse(cls, body: bytes) -> "DeviceInfo":
        try:
            ver, kind, max_body, upt = struct.unpack_from("<BBHI", body, 0)
            model_id = bytes(body[8:16])
            n_in, n_out, macs, rxbuf = struct.unpack_from("<HHIH", body, 16)
            off = 26
            names = []
            for _ in range(2):
                n = body[off]
                names.append(bytes(body[off + 1:off + 1 + n]).decode("utf-8", "replace"))
                if off + 1 + n > len(body):
                    raise IndexError
                off += 1 + n
        except (struct.error, IndexError) as e:
            raise ProtocolError(f"malformed HELLO reply ({len(body)} bytes)") from e
        return cls(ver, TICK_KINDS.get(kind, f"unit{kind}"), upt, max_body, model_id, n_in,
                   n_out, macs, rxbuf, names[0], names[1])


@dataclass
class RunResult:
    steps: int
    ticks: int
    sums: np.ndarray                  # int64 [n_out]: exact sum of the int8 logits over steps
    last_logits: np.ndarray           # int8 [n_out]
    step_logits: np.ndarray | None    # int8 [T, n_out] when requested
    units_per_tick: int = 1
    unit: str = "ticks"
    wall_s: float = 0.0
    stats: dict = field(default_factory=dict)

    @property
    def cost(self) -> int:
        """Device cost of the model steps in `unit` (instructions under QEMU icount)."""
        return self.ticks * self.units_per_tick

    @property
    def cost_per_step(self) -> float:
        return self.cost / self.steps if self.steps else 0.0


# ----------------------------------------------------------------------------- client
class Device:
    """Protocol client over any pyserial-like object (read(n), write(b), timeout; in_waiting
    optional). timeout bounds each attempt; retries is how often a request is sent again."""

    def __init__(self, port, timeout: float = 2.0, retries: int = 3, poll_s: float = 0.02):
        check_link_settings(timeout, retries)
        self.port = port
        self.timeout = float(timeout)
        self.retries = int(retries)
        try:
            self.port.timeout = poll_s
        except (AttributeError, ValueError):
            pass
        self._deframer = Deframer()
        self._frames: deque[bytes] = deque()
        self._seq = random.randrange(256)
        self._steps: int | None = None      # device step count as the host believes it
        self._unsure: int | None = None     # t of a STEP that may or may not have run
        self.info: DeviceInfo | None = None
        self.stats = {"requests": 0, "retransmits": 0, "bad_frames": 0, "stale_replies": 0,
                      "boots": 0, "frame_errors": 0, "resyncs": 0, "bytes_out": 0, "bytes_in": 0}

    # -- construction / teardown
    @classmethod
    def open(cls, url: str, baud: int = 115200, **kw) -> "Device":
        """Open a serial port or URL (socket://host:port, /dev/ttyUSB0, COM3, ...)."""
        import serial
        check_link_settings(kw.get("timeout", 2.0), kw.get("retries", 3))
        check_url(url)
        try:
            port = serial.serial_for_url(url, baudrate=baud, timeout=0.02)
        except (serial.SerialException, ValueError, OSError) as e:
            raise ProtocolError(f"cannot open {url!r}: {e}") from None
        return cls(port, **kw)

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:   # noqa: BLE001 - closing a broken port must not raise
            pass

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- low level
    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            flush = getattr(self.port, "flush", None)
            if flush is not None:
                flush()
        except Exception as e:   # noqa: BLE001 - pyserial raises several types
            raise ProtocolError(f"write failed (device disconnected?): {e}") from None
        self.stats["bytes_out"] += len(data)

    def _read_some(self, remaining: float) -> bytes:
        try:
            waiting = getattr(self.port, "in_waiting", 0) or 0
            data = self.port.read(max(1, min(int(waiting), 4096)))
        except Exception as e:   # noqa: BLE001
            raise ProtocolError(f"read failed (device disconnected?): {e}") from None
        if not data:
            return b""
        self.stats["bytes_in"] += len(data)
        return data

    def _next_packet(self, deadline: float) -> Packet | None:
        """Next frame before the deadline: a Packet, _BAD_FRAME (one that did not decode), or
        None (deadline passed)."""
        while True:
            while self._frames:
                frame = self._frames.popleft()
                try:
                    return decode_frame(frame)
                except FrameError:
                    self.stats["bad_frames"] += 1
                    return _BAD_FRAME
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            data = self._read_some(remaining)
            if data:
                self._frames.extend(self._deframer.feed(data))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def request(self, ptype: int, body: bytes = b"", timeout: float | None = None) -> Packet:
        """Send one request and return its reply packet (type ptype | 0x80)."""
        seq = self._next_seq()
        wire = b"\x00" + encode_packet(ptype, seq, body)   # leading 0x00 ends any partial frame
        name = type_name(ptype)
        tmo = self.timeout if timeout is None else timeout
        idempotent = ptype in IDEMPOTENT
        sends = 0

        def send():
            nonlocal sends, deadline
            sends += 1
            if sends > 1:
                self.stats["retransmits"] += 1
            self._write(wire)
            deadline = time.monotonic() + tmo

        deadline = 0.0
        self.stats["requests"] += 1
        send()
        while True:
            pkt = self._next_packet(deadline)
            if pkt is None:
                if idempotent and sends <= self.retries:
                    send()
                    continue
                raise DeviceTimeout(f"no reply to {name} (seq {seq}) within {tmo:g} s "
                                    f"after {sends} attempt(s)")
            if pkt is _BAD_FRAME:
                # most likely our reply, damaged on the way: ask again now, not after a timeout
                if idempotent and sends <= self.retries:
                    send()
                continue
            if pkt.type == BOOT:
                # the device (re)started: our request may have been lost in the restart
                self.stats["boots"] += 1
                if idempotent and sends <= self.retries:
                    send()
                continue
            if pkt.type == ERROR and _parse_error(pkt.body)[0] in FRAME_ERRORS:
                # a frame reached the device damaged; its seq is unverified (0 or garbage when
                # the header was hit), and the device only hears us: send ours again now
                self.stats["frame_errors"] += 1
                if idempotent and sends <= self.retries:
                    send()
                    continue
                if pkt.seq == seq:
                    code, req, detail = _parse_error(pkt.body)
                    raise DeviceError(code, req if req else ptype, detail)
                continue
            if pkt.seq != seq:
                self.stats["stale_replies"] += 1
                continue
            if pkt.type == ERROR:
                code, req, detail = _parse_error(pkt.body)
                raise DeviceError(code, req if req else ptype, detail)
            if pkt.type != (ptype | REPLY):
                raise ProtocolError(f"unexpected {type_name(pkt.type)} in reply to {name} "
                                    f"(seq {seq})")
            if pkt.version != PROTO_VERSION:
                raise ProtocolError(f"device speaks protocol version {pkt.version}, "
                                    f"host speaks {PROTO_VERSION}")
            return pkt

    # -- requests
    def hello(self) -> DeviceInfo:
        info = DeviceInfo.parse(self.request(HELLO).body)
        if info.proto_version != PROTO_VERSION:
            raise ProtocolError(f"device protocol version {info.proto_version}, "
                                f"host {PROTO_VERSION}")
        if not 1 <= info.n_in <= MAX_BODY - 4:
            raise ProtocolError(f"device reports n_in={info.n_in}: not in 1..{MAX_BODY - 4}")
        # the protocol's limit holds whatever the device claims (a larger value is not v1)
        info.max_body = min(info.max_body, MAX_BODY)
        self.info = info
        return info

    def _need_info(self) -> DeviceInfo:
        return self.info if self.info is not None else self.hello()

    def reset_state(self) -> None:
        self.request(RESET)
        self._steps = 0
        self._unsure = None

    def device_state(self) -> RunResult:
        """The device's state as it reports it (RUN_END: steps, sums, last logits); changes
        nothing on the device."""
        self.stats["resyncs"] += 1
        return self.run_end()

    def step(self, frame) -> np.ndarray:
        """One int8 frame [n_in] -> that step's int8 logits [n_out]. Resets the device state
        first if this client has not reset it yet.

        If every reply is lost, the device's step count is asked (RUN_END): if the step ran,
        its logits are the device's last logits and are returned; if not, DeviceTimeout says
        so (calling step() again with the same frame is safe). If even that query goes
        unanswered, DeviceTimeout says the state is unknown and the next step() asks again:
        it goes on if the lost step did not run and raises DeviceReset if it did, never
        reusing its step index for another frame."""
        info = self._need_info()
        x = _as_int8(frame, (info.n_in,), "frame")
        if self._unsure is not None:
            self._settle_unsure()
        if self._steps is None:
            self.reset_state()
        t = self._steps
        try:
            pkt = self.request(STEP, struct.pack("<I", t) + x.tobytes())
        except DeviceError as e:
            raise self._offset_error(e, t) from None
        except DeviceTimeout as e:
            return self._recover_step(t, e)
        if len(pkt.body) != 4 + info.n_out:
            raise ProtocolError(f"STEP reply of {len(pkt.body)} bytes, expected {4 + info.n_out}")
        (steps,) = struct.unpack_from("<I", pkt.body)
        if steps != t + 1:
            self._steps = None
            raise DeviceReset(f"device step count {steps} after STEP, expected {t + 1}")
        self._steps = steps
        return np.frombuffer(pkt.body, np.int8, info.n_out, 4).copy()

    def _recover_step(self, t: int, lost: DeviceTimeout) -> np.ndarray:
        """Every reply of the STEP at t was lost: find out from the device whether it ran."""
        try:
            state = self.device_state()
        except DeviceTimeout:
            self._unsure, self._steps = t, None
            raise DeviceTimeout(f"{lost}; the device state is unknown (no reply to the status "
                                f"query either): the next step() asks again and goes on only "
                                f"if STEP {t} did not run") from None
        if state.steps == t + 1:
            self._steps = t + 1            # it ran: its logits are the device's last logits
            return state.last_logits
        if state.steps == t:
            raise DeviceTimeout(f"{lost}; the device did not execute it (still at step {t}): "
                                f"step() may be called again") from None
        self._steps = None
        raise DeviceReset(f"device has {state.steps} step(s) since its last reset after a lost "
                          f"STEP {t}: it restarted or was reset by another client") from None

    def _settle_unsure(self) -> None:
        """A STEP at t = self._unsure went unanswered, and so did the status query: ask
        again. Not run -> go on at t; run -> DeviceReset (its logits are gone)."""
        t = self._unsure
        state = self.device_state()          # a timeout here keeps the state unknown
        self._unsure = None
        if state.steps == t:
            self._steps = t
            return
        self._steps = None
        if state.steps == t + 1:
            raise DeviceReset(f"STEP {t} was executed although every reply to it was lost, "
                              f"and its logits are gone: the sequence cannot go on (the next "
                              f"step() starts a new one from a reset state)")
        raise DeviceReset(f"device has {state.steps} step(s) since its last reset, the host "
                          f"expected {t}: it restarted or was reset by another client")

    def run(self, x, step_logits: bool = False, restarts: int = 1) -> RunResult:
        """Run a whole int8 sequence [T, n_in] from a reset state. Returns the exact int32 sums
        of the per-step logits, the last step's logits, the device cost and, with
        step_logits=True, every step's logits. If the device restarts mid-sequence the whole
        sequence is run again (up to `restarts` times)."""
        info = self._need_info()
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"expected an int8 sequence [T, {info.n_in}], got shape {x.shape}")
        x = _as_int8(x, (x.shape[0], info.n_in), "sequence")
        self._unsure = None                  # RUN_BEGIN resets the device: nothing to settle
        for attempt in range(restarts + 1):
            try:
                return self._run_once(x, step_logits, info)
            except DeviceReset:
                if attempt == restarts:
                    raise
            except BaseException:
                self._steps = None           # the sequence is dead: the next step() resets
                raise

    def _offset_error(self, e: DeviceError, expected: int) -> ProtocolError:
        if e.code == E_BAD_OFFSET:
            self._steps = None
            return DeviceReset(f"device has {e.detail} step(s) since its last reset, the host "
                               f"expected {expected}: it restarted or was reset by another client")
        return e

    def _run_once(self, x: np.ndarray, step_logits: bool, info: DeviceInfo) -> RunResult:
        t0 = time.monotonic()
        T = x.shape[0]
        self.request(RUN_BEGIN, bytes([RUN_F_STEP_LOGITS if step_logits else 0]))
        self._steps = 0
        k = (info.max_body - 4) // info.n_in
        if step_logits:
            k = min(k, (info.max_body - 4) // max(1, info.n_out))
        if k < 1:
            raise ProtocolError(f"n_in={info.n_in}/n_out={info.n_out} do not fit in a "
                                f"{info.max_body}-byte frame")
        logits = np.empty((T, info.n_out), np.int8) if step_logits else None
        off = 0
        while off < T:
            kk = min(k, T - off)
            try:
                pkt = self.request(RUN_CHUNK, struct.pack("<I", off) + x[off:off + kk].tobytes())
            except DeviceError as e:
                raise self._offset_error(e, off) from None
            except DeviceTimeout as e:
                self._recover_chunk(off, kk, step_logits, e)
                off += kk                    # it ran, and its replies carried nothing we need
                self._steps = off
                continue
            (steps,) = struct.unpack_from("<I", pkt.body) if len(pkt.body) >= 4 else (-1,)
            if steps != off + kk:
                self._steps = None
                raise DeviceReset(f"device step count {steps} after RUN_CHUNK, expected {off + kk}")
            if step_logits:
                if len(pkt.body) != 4 + kk * info.n_out:
                    raise ProtocolError(f"RUN_CHUNK reply of {len(pkt.body)} bytes, expected "
                                        f"{4 + kk * info.n_out}")
                logits[off:off + kk] = np.frombuffer(pkt.body, np.int8, kk * info.n_out,
                                                     4).reshape(kk, info.n_out)
            off += kk
            self._steps = off
        res = self.run_end()
        if res.steps != T:
            self._steps = None
            raise DeviceReset(f"device reports {res.steps} steps, expected {T}")
        res.step_logits = logits
        res.wall_s = time.monotonic() - t0
        return res

    def _recover_chunk(self, off: int, kk: int, step_logits: bool, lost: DeviceTimeout) -> None:
        """Every reply of the RUN_CHUNK at off (kk steps) was lost: ask the device whether it
        ran. Returns if it did and its replies held nothing the run needs (mean readout: the
        sums stay on the device); raises DeviceTimeout if it did not run or the state is
        unknown, DeviceReset if its per-step logits are gone or the device restarted."""
        self._steps = None
        try:
            state = self.device_state()
        except DeviceTimeout:
            raise DeviceTimeout(f"{lost}; the device state is unknown (no reply to the status "
                                f"query either)") from None
        if state.steps == off:
            raise DeviceTimeout(f"{lost}; the device did not execute it (still at step {off})") \
                from None
        if state.steps == off + kk and not step_logits:
            return
        if state.steps == off + kk:
            raise DeviceReset(f"RUN_CHUNK at step {off} ran but every reply with its per-step "
                              f"logits was lost")
        raise DeviceReset(f"device has {state.steps} step(s) since its last reset after a lost "
                          f"RUN_CHUNK at step {off}: it restarted or was reset by another client")

    def run_end(self) -> RunResult:
        """Sums/last logits/cost since the last reset (RUN_END, paged for large n_out)."""
        info = self._need_info()
        sums = np.zeros(info.n_out, np.int64)
        last = np.zeros(info.n_out, np.int8)
        first, steps, ticks = 0, 0, 0
        while True:
            body = self.request(RUN_END, struct.pack("<H", first)).body
            if len(body) < 18:
                raise ProtocolError(f"RUN_END reply of {len(body)} bytes")
            steps, lo, hi, n_out, pfirst, count = struct.unpack_from("<IIIHHH", body)
            if (n_out != info.n_out or pfirst != first or len(body) != 18 + 5 * count
                    or count > n_out - first or (count == 0 and first < n_out)):
                raise ProtocolError(f"inconsistent RUN_END reply (n_out {n_out}, first "
                                    f"{pfirst}, count {count}, {len(body)} bytes; the host "
                                    f"expected n_out {info.n_out}, first {first})")
            ticks = lo | (hi << 32)
            sums[first:first + count] = np.frombuffer(body, "<i4", count, 18)
            last[first:first + count] = np.frombuffer(body, np.int8, count, 18 + 4 * count)
            first += count
            if first >= n_out:
                break
        return RunResult(steps, ticks, sums, last, None, info.units_per_tick, info.tick_kind,
                         stats=dict(self.stats))


_BAD_FRAME = object()     # _next_packet: a frame arrived but did not decode


def check_link_settings(timeout, retries) -> None:
    """Raise ValueError unless timeout is a finite number of seconds > 0 and retries an
    integer >= 0."""
    try:
        ok_t = math.isfinite(float(timeout)) and float(timeout) > 0
    except (TypeError, ValueError):
        ok_t = False
    if not ok_t:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")


def check_url(url: str) -> None:
    """Raise ProtocolError for a malformed socket:// or rfc2217:// URL (pyserial's own
    messages for these are obscure)."""
    for scheme in ("socket://", "rfc2217://"):
        if not url.startswith(scheme):
            continue
        where = url[len(scheme):].split("?", 1)[0]
        host, sep, port = where.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ProtocolError(f"bad URL {url!r}: expected {scheme}HOST:PORT with PORT in "
                                f"1..65535 (e.g. {scheme}127.0.0.1:4321)")


def _parse_error(body: bytes) -> tuple[int, int, int]:
    if len(body) >= 6:
        code, req, detail = struct.unpack_from("<BBI", body)
        return code, req, detail
    return (body[0] if body else 0), 0, 0


def _as_int8(a, shape, what) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != tuple(shape):
        raise ValueError(f"{what} has shape {list(a.shape)}, expected {list(shape)}")
    if a.dtype != np.int8:
        if not np.issubdtype(a.dtype, np.integer) or a.min(initial=0) < -128 or a.max(initial=0) > 127:
            raise ValueError(f"{what} must be int8 (already quantized), got {a.dtype}")
        a = a.astype(np.int8)
    return np.ascontiguousarray(a)
