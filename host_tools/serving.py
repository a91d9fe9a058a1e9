"""Serve a started device (QEMU firmware, the MicroPython unix port) in the foreground until it
exits or the user stops it: the shared tail of `mgrade-emulator` and `mgrade-micropython-unix`."""
from __future__ import annotations

import signal
import sys
import time


def stop_on_signals() -> None:
    """Ctrl-C, kill/TERM and hangup all raise KeyboardInterrupt, so the caller's `finally`
    stops the device (SIGINT is ignored in background jobs unless installed explicitly)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def wait_for_exit(device, name: str, running: str, url: str, quiet: bool) -> int:
    """Say how to connect (unless quiet), then wait until `device.proc` exits; print its
    status and log on stderr and return its exit code (1 where it exited with 0: a device
    that stops by itself has failed). `device` has .pid, .proc and .log_text()."""
    if not quiet:
        print(f"{name} pid {device.pid} running {running}; connect a host tool to the URL "
              f"above (e.g. host_tools/stream_eval.py --port {url} --model DIR); Ctrl-C "
              f"stops it", file=sys.stderr, flush=True)
    proc = device.proc
    while proc.poll() is None:
        time.sleep(0.2)
    print(f"{name} exited with status {proc.returncode}:\n{device.log_text().strip()}",
          file=sys.stderr)
    return proc.returncode or 1
