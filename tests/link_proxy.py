"""Test helper: the host-built device application (mcu/boards/host: the real C protocol stack
over stdin/stdout) behind a real TCP port, with a frame-aware fault hook on each direction.

    with LinkProxy(exe, to_host=drop_some) as px:        # px.url = socket://127.0.0.1:PORT
        dev = protocol.Device.open(px.url)
        ...
    px.log: every frame seen, as Hop(direction "req"/"rep", packet or None, raw frame bytes)

A hook is called as hook(proxy, packet_or_None, raw_frame) once per complete frame (raw_frame
without its 0x00 delimiter; packet None when it does not decode) and returns the bytes to
forward: raw_frame + b"\\x00" keeps it, b"" drops it, anything else replaces it. Empty frames
(the leading delimiter both sides send) pass through untouched. Like QEMU's UART, the proxy
serves one client; a second connection waits in the listen backlog unanswered.
"""
from __future__ import annotations

import os
import selectors
import socket
import subprocess
import threading
from dataclasses import dataclass

from mgrade_edge.host_tools import protocol as P


@dataclass
class Hop:
    direction: str          # "req" host -> device, "rep" device -> host
    pkt: P.Packet | None
    raw: bytes


def _decode(raw: bytes) -> P.Packet | None:
    try:
        return P.decode_frame(raw)
    except P.FrameError:
        return None


class LinkProxy(threading.Thread):
    def __init__(self, exe, to_device=None, to_host=None):
        super().__init__(daemon=True)
        self.hooks = {"req": to_device, "rep": to_host}
        self.log: list[Hop] = []
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self._halt = threading.Event()
        self._bufs = {"req": bytearray(), "rep": bytearray()}
        self.start()

    # -- queries on the log
    def frames(self, direction: str, ptype: int | None = None) -> list[Hop]:
        return [h for h in self.log if h.direction == direction
                and (ptype is None or (h.pkt is not None and h.pkt.type == ptype))]

    def errors(self) -> list[tuple[int, int, int, int]]:
        """(code, request type, detail, seq) of every ERROR the device sent."""
        out = []
        for h in self.frames("rep", P.ERROR):
            code, req, detail = P._parse_error(h.pkt.body)
            out.append((code, req, detail, h.pkt.seq))
        return out

    # -- forwarding
    def _forward(self, direction: str, data: bytes) -> bytes:
        buf = self._bufs[direction]
        out = bytearray()
        for b in data:
            if b != 0:
                buf.append(b)
                continue
            raw = bytes(buf)
            buf.clear()
            if not raw:
                out.append(0)
                continue
            pkt = _decode(raw)
            self.log.append(Hop(direction, pkt, raw))
            hook = self.hooks[direction]
            out += hook(self, pkt, raw) if hook is not None else raw + b"\x00"
        return bytes(out)

    def run(self):
        self.srv.settimeout(10)
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        dev_out = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, "req")
        sel.register(dev_out, selectors.EVENT_READ, "rep")
        try:
            while not self._halt.is_set():
                for key, _ in sel.select(0.05):
                    if key.data == "req":
                        data = conn.recv(4096)
                        if not data:
                            return
                        fwd = self._forward("req", data)
                        if fwd:
                            self.proc.stdin.write(fwd)
                    else:
                        data = os.read(dev_out, 4096)
                        if not data:
                            return
                        fwd = self._forward("rep", data)
                        if fwd:
                            conn.sendall(fwd)
        except OSError:
            return
        finally:
            sel.close()
            conn.close()

    def close(self):
        self._halt.set()
        self.srv.close()
        self.join(3)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> "LinkProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
