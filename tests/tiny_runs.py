"""Training runs that several test modules start from, trained once per test run (however many
pytest-xdist workers need them: conftest.made_once) instead of once per test or per worker.
Callers copy a run before changing it."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import made_once, shared_root


def tiny_digits_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run of tests/test_train's tiny digits config (`write_cfg(epochs=1)`,
    trained by the train CLI); its config sits next to it as tiny.toml. Read it, or copy it
    (copytree) before resuming, poisoning or converting into it."""
    from tests.test_train import run_train, write_cfg     # here: test_train imports this module

    def make(base: Path) -> None:
        shutil.rmtree(base, ignore_errors=True)      # a failed earlier try
        base.mkdir(parents=True)
        res = run_train(write_cfg(base, epochs=1), "--out", base / "run")
        assert res.returncode == 0, res.stderr

    base = made_once(tmp_path_factory, "tiny-digits-1-epoch",
                     shared_root(tmp_path_factory) / "tiny_digits_1_epoch", make)
    return base / "run"
