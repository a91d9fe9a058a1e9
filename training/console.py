"""What the command-line tools show the user: results and actionable messages only.

    set_quiet(args.quiet)                 # --quiet: only the final summary (and errors)
    say("converting ...")                 # progress notes on stdout, dropped under --quiet
    for b in progress(batches, desc="epoch 1/8", unit="batch"): ...   # bar only on a TTY
    with native_stderr_to(DIR / "convert.log"): import tensorflow ...  # C++/absl noise -> log

Progress bars (tqdm) are drawn only when the terminal they go to is a TTY and --quiet is off:
redirected to a file they would write carriage-return frames. Imports nothing heavy.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

_state = {"quiet": False, "terminal": None}   # terminal: the user's stderr while fd 2 is a log


def require(*modules: str, command: str) -> None:
    """Exit 2 with one line (no traceback) when this Python cannot import one of `modules`
    (top-level names): typically `python3 -m ...` run outside the project's venv.
    command: how the user ran the tool, e.g. "-m mgrade_edge.training.train"."""
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        print(f"error: {sys.executable} cannot import {', '.join(missing)}: run the project's "
              f"commands with its virtual environment, `.venv/bin/python {command} ...` (or "
              f"`. .venv/bin/activate` first; `make venv` creates it)", file=sys.stderr)
        raise SystemExit(2)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = bool(quiet)


def quiet() -> bool:
    return _state["quiet"]


def terminal():
    """The stream the user sees for progress and notes on stderr (sys.stderr, or the saved
    one while `native_stderr_to` sends fd 2 to a log)."""
    return _state["terminal"] or sys.stderr


def say(*parts, file=None) -> None:
    """print() a progress note unless --quiet (stdout by default; file=sys.stderr for
    notes on stderr, which go to the terminal even while fd 2 is a log)."""
    if _state["quiet"]:
        return
    print(*parts, file=terminal() if file is sys.stderr else (file or sys.stdout), flush=True)


def bars_enabled(stream=None) -> bool:
    """Whether a progress bar is drawn on `stream` (default: the terminal): not --quiet and
    the stream is a TTY."""
    stream = stream or terminal()
    try:
        return not _state["quiet"] and stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable=None, **kwargs):
    """tqdm(iterable, **kwargs) on kwargs['file'] (default: the terminal), disabled (writes
    nothing) when `bars_enabled(file)` is false or kwargs['disable'] is true."""
    from tqdm import tqdm

    kwargs.setdefault("file", terminal())
    kwargs["disable"] = kwargs.get("disable", False) or not bars_enabled(kwargs["file"])
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def native_stderr_to(log_path):
    """Send the process's file descriptor 2 (TensorFlow's C++ logs, absl, Python warnings,
    the converter's own prints) to `log_path` (appended) for the duration; `terminal()`
    keeps writing to the user's stderr. Yields the log path."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    user = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    previous = _state["terminal"]
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)
        _state["terminal"] = user
        try:
            yield log_path
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _state["terminal"] = previous
            user.close()


def _script(module: str):
    """A console-script entry point (pyproject [project.scripts]) that runs `module` exactly as
    `python -m module` does, so each tool's early --help / dependency check (under its
    `if __name__ == "__main__"`) answers before torch or TensorFlow load."""
    def run() -> None:
        import runpy
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    run.__doc__ = f"python -m {module}"
    return run


train = _script("mgrade_edge.training.train")
memory = _script("mgrade_edge.training.memory")
sweep = _script("mgrade_edge.training.sweep")
mnist_to_idx = _script("mgrade_edge.training.tasks.mnist_to_idx")
log_to_npz = _script("mgrade_edge.training.tasks.log_to_npz")
convert = _script("mgrade_edge.convert")
codegen = _script("mgrade_edge.convert.codegen")
codegen_micropython = _script("mgrade_edge.convert.codegen_micropython")
# mgrade-package: convert.cpackage's command line run by the host tool that can also measure
# --stack (the firmware's stack high-water mark over a protocol session in QEMU)
cpackage = _script("mgrade_edge.host_tools.firmware_stack")
arduino = _script("mgrade_edge.convert.arduino")
stream_eval = _script("mgrade_edge.host_tools.stream_eval")
emulated_eval = _script("mgrade_edge.host_tools.emulated_eval")
emulator = _script("mgrade_edge.host_tools.emulator")
micropython_unix = _script("mgrade_edge.host_tools.micropython_unix")
