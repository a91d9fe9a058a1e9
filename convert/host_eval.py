"""Fast int8 evaluation: the generated C model package compiled for the host, many sequences
per call, with TFLite-Micro as the cross-check.

    host = HostModel(model_bytes)               # codegen.generate + gcc -O3 -shared, ctypes;
                                                # one library copy per CPU, batch split over them
    logits = host.run(x_q, lengths)             # int8 [N, T, n_in] -> int8 [N, T, n_out]
    logits, how = int8_logits(model_bytes, x_q, lengths)   # the above + cross-check, or TFLM

x_q holds already-quantized int8 frames (the model's input grid, as in test_data.npz), one
sequence per row, padded to T steps; lengths (int [N], optional) gives each sequence's own
steps. The returned logits are every step's int8 logits (the model's logits quantization,
report.json logits_quant), zero after a sequence's length: what convert's TFLite-Micro
stepping returned, padded the same way. The package (convert/codegen.py + mcu/runtime) is
bit-exact with TFLite-Micro (tests/test_mcu_model.py), and each evaluation re-proves it on
its first CHECK_SEQ sequences (fewer when they are long: CHECK_STEPS steps at most) by
stepping TFLite-Micro (convert/stream.Streamer): any differing byte raises ConvertError.
Without gcc, int8_logits steps TFLite-Micro over every sequence (one note line).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mgrade_edge.convert.codegen import generate
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.stream import Streamer
from mgrade_edge.convert.tflm_params import CodegenError

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "mcu" / "runtime"
CC = "gcc"
# -Bsymbolic: each model's library calls its own mg_model_* even when several are loaded;
# -O3 -march=native -flto: built and run on this machine only, inlines the runtime's kernels
# into the model's step (13% faster than -O2 on an sMNIST model; the C is integer-only, so
# the flags cannot change a result, and the cross-check would see it)
CFLAGS = ["-std=c99", "-O3", "-march=native", "-flto", "-fPIC", "-shared", "-Wl,-Bsymbolic"]
CHECK_SEQ = 4            # sequences cross-checked against TFLite-Micro per evaluation
CHECK_STEPS = 4000       # ... at most this many steps in all (at least one sequence)
MAX_THREADS = 8          # HostModel.run splits a batch over this many threads at most

# The batch driver: mg_model_init + mg_model_step over every sequence of a padded batch.
DRIVER_C = r"""
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "mg_model.h"
#include "mg_model_data.h"

static mg_model_t m;

int mg_host_n_in(void) { return MG_MODEL_N_IN; }
int mg_host_n_out(void) { return MG_MODEL_N_OUT; }

/* x int8 [n, t_max, N_IN]; lengths int32 [n] (NULL: all t_max); logits int8 [n, t_max, N_OUT],
 * zero after each sequence's length. Returns 0, or 1 on a length outside [0, t_max]. */
int mg_host_eval_batch(const int8_t *x, int n, int t_max, const int32_t *lengths, int8_t *logits)
{
    int s, t;
    for (s = 0; s < n; ++s) {
        int len = lengths ? (int)lengths[s] : t_max;
        const int8_t *xs = x + (size_t)s * t_max * MG_MODEL_N_IN;
        int8_t *ls = logits + (size_t)s * t_max * MG_MODEL_N_OUT;
        if (len < 0 || len > t_max) {
            return 1;
        }
        mg_model_init(&m);
        for (t = 0; t < len; ++t) {
            mg_model_step(&m, xs + (size_t)t * MG_MODEL_N_IN, ls + (size_t)t * MG_MODEL_N_OUT);
        }
        memset(ls + (size_t)len * MG_MODEL_N_OUT, 0, (size_t)(t_max - len) * MG_MODEL_N_OUT);
    }
    return 0;
}
"""


class HostEvalUnavailable(Exception):
    """No host C compiler: evaluate with TFLite-Micro instead."""


def available() -> bool:
    return shutil.which(CC) is not None


def build(model_bytes: bytes, out_dir) -> Path:
    """Generate the model package into out_dir/gen and compile it (compile_package); returns
    the shared library's path."""
    if not available():
        raise HostEvalUnavailable(f"{CC} not found")
    gen = Path(out_dir) / "gen"
    try:
        generate(model_bytes, gen)
    except CodegenError as e:
        raise ConvertError(f"the C package generator refused the model: {e}") from None
    return compile_package(gen, out_dir)


def compile_package(gen_dir, out_dir) -> Path:
    """Compile a generated package folder (mg_model.c, mg_model_data.{c,h}) with mcu/runtime
    and the batch driver into out_dir/libmg_host.so; returns its path."""
    if not available():
        raise HostEvalUnavailable(f"{CC} not found")
    out, gen = Path(out_dir), Path(gen_dir)
    (out / "mg_host_driver.c").write_text(DRIVER_C)
    lib = out / "libmg_host.so"
    srcs = [out / "mg_host_driver.c", *sorted(gen.glob("*.c")), *sorted(RUNTIME_DIR.glob("*.c"))]
    r = subprocess.run([CC, *CFLAGS, "-I", str(RUNTIME_DIR), "-I", str(gen),
                        *map(str, srcs), "-o", str(lib)], capture_output=True, text=True)
    if r.returncode != 0:
        first = (r.stderr or r.stdout).strip().splitlines()[:1]
        raise ConvertError(f"host build of the C model package failed: "
                           f"{first[0] if first else f'{CC} exit status {r.returncode}'}")
    return lib


def default_threads() -> int:
    """Threads HostModel.run uses: the CPUs this process may run on, at most MAX_THREADS."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


class HostModel:
    """One model's C package as host shared libraries (built in a temporary folder): one
    loaded copy per thread (each copy has its own static instance and scratch), the batch
    split across them; ctypes releases the GIL during each call."""

    def __init__(self, model_bytes: bytes, lib_path=None, threads: int | None = None):
        self._tmp = None
        if lib_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mg_host_eval_")
            lib_path = build(model_bytes, self._tmp.name)
        lib_path = Path(lib_path)
        self.libs = []
        for k in range(threads or default_threads()):
            path = lib_path
            if k:                   # dlopen of one path twice would share its statics
                path = lib_path.with_name(f"{lib_path.stem}_{k}{lib_path.suffix}")
                shutil.copyfile(lib_path, path)
            lib = ctypes.CDLL(str(path))
            lib.mg_host_eval_batch.restype = ctypes.c_int
            lib.mg_host_eval_batch.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                               ctypes.c_void_p, ctypes.c_void_p]
            self.libs.append(lib)
        self.n_in, self.n_out = self.libs[0].mg_host_n_in(), self.libs[0].mg_host_n_out()

    def run(self, x_q: np.ndarray, lengths=None) -> np.ndarray:
        """int8 x_q [N, T, n_in] (lengths int [N] or None) -> int8 logits [N, T, n_out]."""
        if x_q.dtype != np.int8 or x_q.ndim != 3 or x_q.shape[2] != self.n_in:
            raise ConvertError(f"expected int8 [N, T, {self.n_in}], got {x_q.dtype} "
                               f"{list(x_q.shape)}")
        N, T, _ = x_q.shape
        x = np.ascontiguousarray(x_q)
        out = np.empty((N, T, self.n_out), np.int8)
        lens = None if lengths is None else np.ascontiguousarray(lengths, np.int32)
        if lens is not None and lens.shape != (N,):
            raise ConvertError(f"lengths {list(lens.shape)} do not match {N} sequences")
        if lens is not None and ((lens < 0) | (lens > T)).any():
            raise ConvertError(f"a sequence length is outside [0, {T}]")
        cuts = np.linspace(0, N, min(len(self.libs), max(N, 1)) + 1).astype(int)

        def part(k: int) -> int:
            a, b = cuts[k], cuts[k + 1]
            return self.libs[k].mg_host_eval_batch(
                x[a:b].ctypes.data, int(b - a), T,
                None if lens is None else lens[a:b].ctypes.data, out[a:b].ctypes.data)
        if len(cuts) == 2:
            rcs = [part(0)]
        else:
            with ThreadPoolExecutor(len(cuts) - 1) as pool:
                rcs = list(pool.map(part, range(len(cuts) - 1)))
        if any(rcs):
            raise ConvertError(f"a sequence length is outside [0, {T}]")
        return out


_BUILT: dict[bytes, HostModel] = {}     # sha256 of a model -> its library, this process
_KEEP = 4


def host_model(model_bytes: bytes) -> HostModel:
    """HostModel(model_bytes), built once per process for the last few models (convert's
    `--state-bits auto` evaluates the model it keeps twice: validation, then test)."""
    if not available():
        raise HostEvalUnavailable(f"{CC} not found")
    key = hashlib.sha256(model_bytes).digest()
    if key not in _BUILT:
        while len(_BUILT) >= _KEEP:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = HostModel(model_bytes)
    return _BUILT[key]


def check_count(T: int, n: int) -> int:
    """How many leading sequences of n (T steps each) the cross-check streams."""
    return min(n, CHECK_SEQ, max(1, CHECK_STEPS // max(T, 1)))


def compare(i: int, tflm: np.ndarray, host: np.ndarray) -> None:
    """Raise ConvertError unless sequence i's host-C logits [L, n_out] equal TFLite-Micro's."""
    if tflm.shape != host.shape or not np.array_equal(tflm, host):
        bad = np.argwhere(tflm != host) if tflm.shape == host.shape else [[0, 0]]
        t = int(bad[0][0])
        raise ConvertError(f"the host-compiled C model package differs from TFLite-Micro on "
                           f"sequence {i}, step {t} (int8 logits {host[t].tolist()} vs "
                           f"{tflm[t].tolist()}): the generated C is not bit-exact with "
                           f"TFLite-Micro for this model; please report it")


def cross_check(streamer: Streamer, x_q: np.ndarray, lengths, logits: np.ndarray,
                n: int | None = None) -> int:
    """Stream the first n (default check_count) sequences through TFLite-Micro and compare
    every step's logits with the host batch's; returns n."""
    N, T = x_q.shape[:2]
    n = check_count(T, N) if n is None else min(n, N)
    for i in range(n):
        L = T if lengths is None else int(lengths[i])
        if L > 0:
            compare(i, streamer.run(x_q[i, :L]), logits[i, :L])
    return n


def tflm_logits(model_bytes: bytes, x_q: np.ndarray, lengths=None, progress=None) -> np.ndarray:
    """The reference: TFLite-Micro stepped frame by frame, padded like HostModel.run."""
    s = Streamer(model_bytes, "tflm")
    N, T = x_q.shape[:2]
    rows = [np.zeros((0, T, s.step_meta.n_classes), np.int8)]
    seqs = range(N) if progress is None else progress(range(N))
    for i in seqs:
        L = T if lengths is None else int(lengths[i])
        row = np.zeros((1, T, s.step_meta.n_classes), np.int8)
        if L > 0:
            row[0, :L] = s.run(x_q[i, :L])
        rows.append(row)
    return np.concatenate(rows)


def no_gcc_note(e: HostEvalUnavailable) -> str:
    return (f"note: {e}: int8 accuracy by stepping TFLite-Micro (slow; install gcc for the "
            f"host C evaluation)")


def int8_logits(model_bytes: bytes, x_q: np.ndarray, lengths=None, note=print,
                progress=None) -> tuple[np.ndarray, str]:
    """(every step's int8 logits [N, T, n_out], "host-c" or "tflm"): the host C batch,
    cross-checked against TFLite-Micro on the first sequences; without gcc TFLite-Micro
    stepping over all of them, with one note."""
    try:
        host = host_model(model_bytes)
    except HostEvalUnavailable as e:
        note(no_gcc_note(e))
        return tflm_logits(model_bytes, x_q, lengths, progress), "tflm"
    logits = host.run(x_q, lengths)
    cross_check(Streamer(model_bytes, "tflm"), x_q, lengths, logits)
    return logits, "host-c"
