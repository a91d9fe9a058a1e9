"""Ctrl-C as a clean exit for the command-line tools (train, convert, stream_eval).

A command installs `exit_on_interrupt(what, hard=True)` first thing when run as a program:
while its imports load (torch, TFLite: seconds), SIGINT prints one line, "interrupted: WHAT",
and ends the process at once with exit code 130 (os._exit: an exception raised there can be
swallowed by an extension module's initialisation, and nothing has been written yet). Once
the imports are done it installs `exit_on_interrupt(what)`: SIGINT then raises
SystemExit(130), so every `finally` / `except BaseException` on the way out runs (run locks
released, temporary files and folders removed); should something swallow that exception, the
process still ends with 130 after GRACE_S. No traceback either way. `training.train` replaces
it with its own checkpoint-and-stop handler once training starts. `deferred_interrupt()` holds a SIGINT
back until a block that must not be cut in two (a lock file taken and noted) has ended.
Standard library only, so installing it is instant.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

EXIT_INTERRUPTED = 130
GRACE_S = 5.0       # a swallowed SystemExit: end the process anyway after this long
_defer = {"active": False, "pending": None}    # deferred_interrupt's state (main thread)


def exit_on_interrupt(what: str, hard: bool = False):
    """From now on SIGINT -> 'interrupted: {what}' on stderr and exit code 130 (hard: at
    once; else SystemExit(130) through the cleanup code). A second Ctrl-C is ignored."""
    def stop():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from mgrade_edge.training.console import terminal   # the user's stderr, also while
        print(f"interrupted: {what}", file=terminal(), flush=True)   # fd 2 is convert's log
        if hard:
            os._exit(EXIT_INTERRUPTED)
        timer = threading.Timer(GRACE_S, os._exit, (EXIT_INTERRUPTED,))
        timer.daemon = True
        timer.start()
        raise SystemExit(EXIT_INTERRUPTED)

    def handler(signum, frame):
        if _defer["active"]:
            _defer["pending"] = stop
        else:
            stop()
    signal.signal(signal.SIGINT, handler)


@contextmanager
def deferred_interrupt():
    """A SIGINT that arrives inside the block is acted on when the block ends (e.g. a lock
    file taken and its holder noted: never one without the other)."""
    _defer["active"], _defer["pending"] = True, None
    try:
        yield
    finally:
        _defer["active"] = False
        pending, _defer["pending"] = _defer["pending"], None
        if pending is not None:
            pending()
