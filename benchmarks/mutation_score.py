"""Mutation score of the test suite: plant small, plausible one-line bugs one at a time in a
scratch copy of the repository and check that the tests covering that area fail.

    python -m benchmarks.mutation_score [--only ID,...] [--list] [--keep] [--timeout S]

Each mutation is (id, file, original text, mutated text, tests to run). The original text
must occur exactly once in the committed file, otherwise the mutation is reported as STALE
(the code moved: update the list). A mutation is CAUGHT when the named tests fail (pytest exit
code 1) or time out, SURVIVED when they pass. The tests run are the ones of the mutated area,
not the whole suite, so a full round stays within tens of minutes on 2 cores; tests marked
`slow` are deselected unless --slow is given.

Not part of `make test`: it runs the suite dozens of times.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str          # path relative to the repo root
    old: str           # exact text, must occur once
    new: str
    tests: tuple       # pytest node ids or files (relative to the repo root)
    what: str          # the plausible bug in words


M = Mutation
MUTATIONS: list[Mutation] = [
    # --- training: the scan, the candidate activation, the delay kernel ---------------------
    M("scan-g-offset", "training/scan.py", "torch.where(x >= 0, x + 0.5, torch.sigmoid(x))",
      "torch.where(x >= 0, x + 0.25, torch.sigmoid(x))", ("tests/test_scan.py",),
      "wrong offset in g()"),
    M("scan-loop-gate", "training/scan.py", "h = (1 - z[:, t]) * h + z[:, t] * cand[:, t]",
      "h = (1 - z[:, t]) * h + cand[:, t]", ("tests/test_scan.py",),
      "gate dropped from the reference loop"),
    M("scan-chunk", "training/scan.py", "return max(1, min(T, int(round(math.sqrt(T)))))",
      "return max(1, min(T, int(math.sqrt(T)) + 1))", ("tests/test_scan.py",),
      "chunk length off by one"),
    # --- the C fixed-point arithmetic ----------------------------------------------------
    M("c-srdhm-nudge", "mcu/runtime/mg_quant.c",
      "nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));",
      "nudge = ((int64_t)1 << 30);", ("tests/test_runtime_kernels.py",),
      "rounding nudge ignores the sign"),
    M("c-rdbpot-threshold", "mcu/runtime/mg_quant.c",
      "const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);",
      "const int32_t threshold = (mask >> 1);", ("tests/test_runtime_kernels.py",),
      "round-half-away-from-zero becomes round-half-up"),
    M("c-sat-shl", "mcu/runtime/mg_quant.c", "if (x < -threshold) {", "if (x < -threshold - 1) {",
      ("tests/test_runtime_kernels.py",), "saturation bound off by one"),
    # --- the protocol: COBS and CRC on both sides ----------------------------------------
    M("py-crc-init", "host_tools/protocol.py", "crc: int = 0xFFFF", "crc: int = 0x0000",
      ("tests/test_protocol.py",), "CRC-16 initial value"),
    # --- durability and memory report ----------------------------------------------------
    M("memory-bias-bytes", "training/memory.py",
      "int8_params = c[\"weights\"] + c[\"conv_taps\"] + 4 * c[\"biases\"] + c[\"norm\"] + \\",
      "int8_params = c[\"weights\"] + c[\"conv_taps\"] + c[\"biases\"] + c[\"norm\"] + \\",
      ("tests/test_memory.py",), "int8 biases counted as 1 byte"),
]


def scratch_copy(dest: Path) -> None:
    """The committed tree (git HEAD) plus the shared .venv link, in dest."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    venv = ROOT / ".venv"
    if venv.exists():
        (dest / ".venv").symlink_to(venv.resolve())


def run_one(m: Mutation, timeout: float, slow: bool, keep: bool) -> tuple[str, float]:
    """Plant m in a fresh scratch copy, run its tests: CAUGHT / SURVIVED / STALE."""
    src = (ROOT / m.file).read_text() if (ROOT / m.file).exists() else ""
    if src.count(m.old) != 1:
        return "STALE", 0.0
    tmp = Path(tempfile.mkdtemp(prefix=f"mut-{m.id}-"))
    t0 = time.monotonic()
    try:
        scratch_copy(tmp)
        target = tmp / m.file
        target.write_text(target.read_text().replace(m.old, m.new, 1))
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               "--basetemp", str(tmp / ".pt"), *m.tests]
        if not slow:
            cmd += ["-m", "not slow"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout,
                                 env=env)
        except subprocess.TimeoutExpired:
            return "CAUGHT (timeout)", time.monotonic() - t0
        if res.returncode == 0:
            return "SURVIVED", time.monotonic() - t0
        if res.returncode == 1:
            return "CAUGHT", time.monotonic() - t0
        return f"ERROR (pytest exit {res.returncode})", time.monotonic() - t0
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mutation_score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated mutation ids")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mutation run")
    p.add_argument("--slow", action="store_true", help="also run tests marked slow")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies")
    args = p.parse_args(argv)
    chosen = MUTATIONS
    if args.only:
        ids = set(args.only.split(","))
        unknown = ids - {m.id for m in MUTATIONS}
        if unknown:
            print(f"error: unknown mutation id(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.id in ids]
    if args.list:
        for m in chosen:
            print(f"{m.id:<24} {m.file:<36} {m.what}")
        return 0
    results = []
    for i, m in enumerate(chosen, 1):
        verdict, secs = run_one(m, args.timeout, args.slow, args.keep)
        results.append((m, verdict))
        print(f"[{i}/{len(chosen)}] {m.id:<24} {verdict:<18} {secs:6.1f} s  {m.what}",
              flush=True)
    planted = [v for _, v in results if v != "STALE"]
    caught = sum(v.startswith("CAUGHT") for v in planted)
    stale = len(results) - len(planted)
    print(f"\nmutation score: {caught}/{len(planted)} caught"
          + (f" ({100 * caught / len(planted):.0f}%)" if planted else "")
          + (f"; {stale} stale (text not found once: update the list)" if stale else ""))
    survived = [m.id for m, v in results if v == "SURVIVED"]
    if survived:
        print("survived: " + ", ".join(survived))
    return 0


if __name__ == "__main__":
    sys.exit(main())
