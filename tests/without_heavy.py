"""Run a CLI as a host-only install would: torch, TensorFlow and LiteRT cannot be imported.

    python tests/without_heavy.py -m MODULE [ARGS...]
    python tests/without_heavy.py SCRIPT.py [ARGS...]

A meta-path finder raises ImportError for every module under BLOCKED, as if the package were
not installed (an optional import that catches ImportError goes on without it). The repo root
is put on sys.path, as `python -m` from the root does.
"""
from __future__ import annotations

import importlib.abc
import runpy
import sys
from pathlib import Path

BLOCKED = ("torch", "tensorflow", "ai_edge_litert")


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked: host-only install)")
        return None


def main() -> None:
    sys.meta_path.insert(0, Blocker())
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
