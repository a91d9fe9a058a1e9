"""Mutation check of the serial link (not part of `make test`): plants one plausible one-line
bug at a time in a scratch copy of the repo (mcu/app, host_tools) and runs the link tests
there; a mutant is caught when they fail.

    .venv/bin/python tests/mutate_link.py [--only SUBSTRING] [--keep]

Prints one line per mutant and the score (caught / planted). Exit 0 when all are caught.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_link.py", "tests/test_protocol.py",
         "tests/test_fuzz_parser.py::test_fuzz_other_seed_smoke"]

# (file, exact text, replacement, what the bug is)
MUTANTS = [
    ("mcu/app/mg_app.c", "cache_type == p->type && p->seq == cache_seq && ",
     "cache_type == p->type && ", "cache ignores the seq"),
    ("mcu/app/mg_app.c", "memcmp(p->body, cache_req, p->len) == 0", "1",
     "cache ignores the body"),
    ("mcu/app/mg_app.c", "memcmp(p->body, cache_req, p->len) == 0",
     "memcmp(p->body + 4, cache_req + 4, p->len - 4u) == 0", "cache ignores t"),
    ("mcu/app/mg_app.c", "memcmp(p->body, cache_req, p->len) == 0",
     "memcmp(p->body, cache_req, 4u + (p->len - 4u) / 2u) == 0", "cache compares half the frames"),
    ("mcu/app/mg_app.c", "    memcpy(cache_req, p->body, p->len);\n", "",
     "cache keeps no copy of the request"),
    ("mcu/app/mg_proto.c", "if (body_len > MG_PROTO_MAX_BODY) {",
     "if (body_len > MG_PROTO_MAX_BODY + 8u) {", "no body limit"),
    ("mcu/app/mg_proto.c", "if (body_len > MG_PROTO_MAX_BODY) {",
     "if (body_len >= MG_PROTO_MAX_BODY) {", "body limit off by one"),
    ("mcu/app/mg_proto.c", "    peek_header(frame, n, err);            /* before",
     "    /* before", "COBS errors without seq"),
    ("mcu/app/mg_proto.c", "        err->seq = head[2];", "        err->seq = head[1];",
     "peek reads the wrong byte"),
    ("mcu/app/mg_app.c", "err.code == MG_E_OVERSIZE ? (uint32_t)MG_PROTO_MAX_BODY : 0u",
     "0u", "OVERSIZE without its detail"),
    ("host_tools/protocol.py", "                if idempotent and sends <= self.retries:\n                    send()\n                continue\n            if pkt.type == BOOT:",
     "                continue\n            if pkt.type == BOOT:", "no resend on a bad reply frame"),
    ("host_tools/protocol.py", "            if pkt.type == ERROR and _parse_error(pkt.body)[0] in FRAME_ERRORS:",
     "            if pkt.type == ERROR and pkt.seq == seq and _parse_error(pkt.body)[0] in FRAME_ERRORS:",
     "resend only on frame errors naming our seq"),
    ("host_tools/protocol.py", "                if idempotent and sends <= self.retries:\n                    send()\n                    continue\n                raise DeviceTimeout",
     "                if idempotent and sends < self.retries:\n                    send()\n                    continue\n                raise DeviceTimeout",
     "one retry too few"),
    ("host_tools/protocol.py", "        except DeviceTimeout as e:\n            return self._recover_step(t, e)\n",
     "", "no resync after a lost STEP"),
    ("host_tools/protocol.py", "            self._steps = t + 1            # it ran",
     "            self._steps = t            # it ran", "resync keeps the old t"),
    ("host_tools/protocol.py", "        if self._unsure is not None:\n            self._settle_unsure()\n",
     "", "unknown state not settled"),
    ("host_tools/protocol.py", "        if state.steps == off + kk and not step_logits:\n            return\n",
     "        if state.steps == off + kk:\n            return\n", "lost per-step logits accepted"),
    ("host_tools/protocol.py", "        info.max_body = min(info.max_body, MAX_BODY)\n", "",
     "HELLO max_body trusted"),
]


def scratch_copy(dst: Path) -> None:
    for name in ("mcu", "host_tools", "tests", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    (dst / ".venv").symlink_to((ROOT / ".venv").resolve())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the mutants whose description has this")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only in m[3]]
    caught = 0
    for i, (rel, old, new, what) in enumerate(chosen):
        tmp = Path(tempfile.mkdtemp(prefix=f"mut-link-{i}-"))
        try:
            scratch_copy(tmp)
            text = (tmp / rel).read_text()
            if text.count(old) != 1:
                print(f"[{i:2d}] SKIP  {what}: text not found once in {rel}", flush=True)
                continue
            (tmp / rel).write_text(text.replace(old, new))
            t0 = time.monotonic()
            res = subprocess.run([str(tmp / ".venv/bin/python"), "-m", "pytest", "-x", "-q",
                                  "-p", "no:cacheprovider", "--basetemp", str(tmp / "pt"),
                                  *TESTS], cwd=tmp, capture_output=True, text=True, timeout=900)
            ok = res.returncode != 0
            caught += ok
            first = next((ln for ln in res.stdout.splitlines() if ln.startswith("FAILED")), "")
            print(f"[{i:2d}] {'caught' if ok else 'MISSED'} {what} ({time.monotonic() - t0:.0f} s)"
                  f"{' ' + first[:110] if first else ''}", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"mutation score: {caught}/{len(chosen)} caught")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
