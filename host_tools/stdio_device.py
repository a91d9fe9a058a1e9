"""Serve a device program that speaks the protocol on its stdin/stdout (the MicroPython unix
port running mg_app, the C app built for the host board) on a local TCP port, like QEMU's UART.

    with StdioDevice(["build/host/mg_host_device"]) as d:
        dev = protocol.Device.open(d.url)            # socket://127.0.0.1:PORT
    # the process is stopped here (its stdin closed, then killed), also on exceptions

One TCP client at a time; when it disconnects the next one is accepted, and the program keeps
running (its state survives, as a board's does when the host tool is restarted). What the
program writes while no client is connected (the BOOT frame sent at start, a reply to a request
whose client hung up) is kept and sent to the next client. Its stderr is kept in `log_text()`.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgrade_edge.host_tools.emulator import LoggedProcess, _die_with_parent  # noqa: E402


class StdioDeviceError(RuntimeError):
    pass


class StdioDevice(LoggedProcess):
    """command (argv list) run in cwd, its stdio bridged to one TCP client at a time."""
    error = StdioDeviceError
    log_prefix = "device-"

    def __init__(self, command=None, cwd=None, port: int | None = None):
        super().__init__()
        self.cmd = list(command) if command is not None else None
        self.cwd = cwd
        self.requested_port = port
        self.server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._pending = bytearray()          # device output while no client is connected
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def command(self) -> list[str]:
        """The argv to run (subclasses build it and check what it needs first)."""
        if not self.cmd:
            raise self.error("no command to run")
        return self.cmd

    def start(self) -> str:
        cmd = self.command()
        self._stop.clear()
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.server.bind(("127.0.0.1", self.requested_port or 0))
        except OSError as e:
            self.server.close()
            self.server = None
            raise self.error(f"cannot listen on port {self.requested_port}: {e}") from None
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        try:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE,
                                         stderr=self._open_log(self.log_prefix), bufsize=0,
                                         preexec_fn=_die_with_parent if os.name == "posix" else None)
        except OSError as e:
            self.server.close()
            self.server, self.port = None, None
            raise self.error(f"cannot run {cmd[0]}: {e}") from None
        for target in (self._pump_out, self._accept_loop):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)
        return self.url

    # device -> client
    def _pump_out(self) -> None:
        out = self.proc.stdout
        while not self._stop.is_set():
            data = out.read1(4096) if hasattr(out, "read1") else os.read(out.fileno(), 4096)
            if not data:
                break
            with self._lock:
                c = self._client
                if c is None:
                    self._pending += data
                    continue
            try:
                c.sendall(data)
            except OSError:
                pass

    # client -> device, one client at a time
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (OSError, AttributeError):
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                pending, self._pending = bytes(self._pending), bytearray()
                self._client = conn
            try:
                if pending:
                    conn.sendall(pending)
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    self.proc.stdin.write(data)
                    self.proc.stdin.flush()
            except (OSError, ValueError, AttributeError):
                pass
            finally:
                with self._lock:
                    self._client = None
                conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self.server is not None:
            try:
                self.server.close()
            except OSError:
                pass
            self.server = None
        with self._lock:
            if self._client is not None:
                try:
                    self._client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.stdin.close()              # the program exits when its input closes
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            self.returncode = proc.returncode
        self._close_log()
        self.port = None
