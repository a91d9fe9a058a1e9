"""Test helper: hand-built protocol frames over a TCP link to a device (QEMU's UART, a
StdioDevice, a LinkProxy), for the tests that check the device's side of docs/protocol.md byte
by byte. The codecs are host_tools/protocol.py's; this adds what a well-behaved host never
sends (bodies over 240 bytes, wrong versions, damaged frames) and a plain ask/answer loop.

    link = RawLink(url)
    ans = link.ask(P.STEP, 7, struct.pack("<I", 0) + frame)      # the packet answering seq 7
    error(ans) -> ("BAD_OFFSET", P.STEP, 1)                        # (code name, type, detail)
"""
from __future__ import annotations

import socket
import struct
import time

from mgrade_edge.host_tools import protocol as P


def raw_packet(ptype: int, seq: int, body: bytes = b"", version: int = P.PROTO_VERSION,
               length: int | None = None, crc_xor: int = 0) -> bytes:
    """Wire bytes COBS(packet) + 0x00 of any packet: any body length (encode_packet refuses
    > 240 bytes), a `length` field that lies, a CRC XORed with crc_xor."""
    n = len(body) if length is None else length
    pkt = struct.pack("<BBBH", version & 0xFF, ptype & 0xFF, seq & 0xFF, n) + bytes(body)
    return P.cobs_encode(pkt + struct.pack("<H", P.crc16_ccitt(pkt) ^ crc_xor)) + b"\x00"


def drop_a_byte(wire: bytes) -> bytes:
    """wire with the last byte before its delimiter lost: the COBS decoding of the frame
    fails while its header (and so its seq and type) stays intact."""
    cut = wire[:-2] + wire[-1:]
    try:
        P.cobs_decode(cut[:-1])
    except P.FrameError:
        return cut
    raise AssertionError("losing that byte leaves a valid COBS frame")


def error(pkt: P.Packet) -> tuple:
    """(code name, request type, detail) of an ERROR packet (AssertionError for another)."""
    assert pkt.type == P.ERROR, f"expected an ERROR, got {P.type_name(pkt.type)} {pkt.body.hex()}"
    code, req, detail = P._parse_error(pkt.body)
    return P.ERROR_NAMES.get(code, code), req, detail


class RawLink:
    """One TCP connection to a device. ask*() send `0x00 + wire` and return the first packet
    with the request's seq (BOOT frames and other seqs are skipped, and kept in `.skipped`:
    decoded Packets, or the raw bytes of frames that did not decode)."""

    def __init__(self, url: str, timeout: float = 15.0, connect_timeout: float = 10.0):
        host, port = url[len("socket://"):].rsplit(":", 1)
        end = time.monotonic() + connect_timeout
        while True:                        # QEMU listens again shortly after a disconnect
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=2.0)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(0.05)
        self.timeout = timeout
        self.deframer = P.Deframer()
        self.skipped: list = []
        self._queue: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packets(self, timeout: float | None = None, quiet: float | None = None):
        """Yield what arrives (Packet, or bytes for a frame that does not decode) until
        `timeout` seconds pass, or `quiet` seconds pass without a byte."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        last = time.monotonic()
        while True:
            while self._queue:                 # frames received but not yet handed out
                yield self._queue.pop(0)
            if time.monotonic() > end or (quiet is not None and time.monotonic() - last > quiet):
                return
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError("the device closed the connection")
            last = time.monotonic()
            for f in self.deframer.feed(data):
                try:
                    self._queue.append(P.decode_frame(f))
                except P.FrameError:
                    self._queue.append(f)

    def ask_wire(self, wire: bytes, seq: int, timeout: float | None = None) -> P.Packet:
        self.skipped = []
        self.send(b"\x00" + wire)
        return self.answer(seq, timeout)

    def answer(self, seq: int, timeout: float | None = None) -> P.Packet:
        """The next packet with that seq (what comes before it goes to .skipped)."""
        for pkt in self.packets(timeout):
            if isinstance(pkt, P.Packet) and pkt.type != P.BOOT and pkt.seq == seq:
                return pkt
            self.skipped.append(pkt)
        raise AssertionError(f"no answer to seq {seq} (received {self.skipped})")

    def ask(self, ptype: int, seq: int, body: bytes = b"", **kw) -> P.Packet:
        return self.ask_wire(raw_packet(ptype, seq, body, **kw), seq)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
