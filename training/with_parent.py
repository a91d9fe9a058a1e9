"""Run a module as `python -m MODULE ARGS...`, but die (SIGTERM) when the parent process exits.

    python -m mgrade_edge.training.with_parent PARENT_PID MODULE [ARGS...]

The sweep starts the converter this way so that no conversion outlives the sweep, however it
exits (Linux: PR_SET_PDEATHSIG; elsewhere the module simply runs). Exit code: the module's;
143 if PARENT_PID had already exited before the guard was set.
"""
from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m mgrade_edge.training.with_parent PARENT_PID MODULE [ARGS...]",
              file=sys.stderr)
        return 2
    parent, module = int(argv[0]), argv[1]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:                   # it died before prctl
            return 143
    sys.argv = [module, *argv[2:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
