"""The C data-movement kernels (mcu/runtime/mg_kernels.c) against NumPy, at the edges the
TFLite-Micro graph comparisons never reach: GATHER with an index one past the end (must
report -1 and zero the row, as TFLM refuses it), CONCATENATION with several outer slices,
mg_copy on overlapping buffers in both directions (memmove semantics, as its header says),
MINIMUM/MAXIMUM with broadcasting. Compiled for the host, called through ctypes.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
MAX_DIMS = 6
I32 = ctypes.c_int32


class Gather(ctypes.Structure):
    _fields_ = [(n, I32) for n in ("batch_size", "outer_size", "axis_size", "inner_size",
                                   "coord_size", "elem_bytes")]


class Concat(ctypes.Structure):
    _fields_ = [("num_inputs", I32), ("outer", I32), ("copy_bytes", ctypes.POINTER(I32))]


class Bcast(ctypes.Structure):
    _fields_ = [("count", I32), ("ndims", I32), ("shape", I32 * MAX_DIMS),
                ("stride1", I32 * MAX_DIMS), ("stride2", I32 * MAX_DIMS)]


@pytest.fixture(scope="module")
def k(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("host gcc not installed")
    so = tmp_path_factory.mktemp("kernels") / "libmgkernels.so"
    subprocess.run(["gcc", "-std=c99", "-O1", "-shared", "-fPIC", "-I", str(RUNTIME),
                    str(RUNTIME / "mg_kernels.c"), str(RUNTIME / "mg_quant.c"), "-o", str(so)],
                   check=True)
    lib = ctypes.CDLL(str(so))
    lib.mg_gather.restype = ctypes.c_int
    lib.mg_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_gather_equals_take_and_refuses_out_of_range(k):
    rng = np.random.default_rng(0)
    outer, axis, inner, coords = 3, 5, 4, 7
    params = rng.integers(-128, 128, (outer, axis, inner), dtype=np.int8)
    idx = rng.integers(0, axis, coords).astype(np.int32)
    idx[0], idx[-1] = 0, axis - 1                    # both ends of the valid range
    p = Gather(1, outer, axis, inner, coords, 1)
    out = np.full((outer, coords, inner), 99, np.int8)
    assert k.mg_gather(ctypes.byref(p), _ptr(params), _ptr(idx), _ptr(out)) == 0
    np.testing.assert_array_equal(out, np.take(params, idx, axis=1))
    for bad in (axis, -1):                            # one past the end, negative
        idx2 = idx.copy()
        idx2[2] = bad
        out = np.full((outer, coords, inner), 99, np.int8)
        assert k.mg_gather(ctypes.byref(p), _ptr(params), _ptr(idx2), _ptr(out)) == -1, bad
        assert not out[:, 2].any(), "the row of a refused index is zeroed"
        keep = [c for c in range(coords) if c != 2]
        np.testing.assert_array_equal(out[:, keep], np.take(params, idx2[keep], axis=1))


def test_concatenation_equals_numpy_with_outer_slices(k):
    rng = np.random.default_rng(1)
    parts = [rng.integers(-128, 128, (3, w), dtype=np.int8) for w in (2, 5, 1)]
    sizes = (I32 * 3)(*[a.shape[1] for a in parts])
    p = Concat(3, 3, sizes)
    ptrs = (ctypes.c_void_p * 3)(*[a.ctypes.data for a in parts])
    out = np.zeros((3, 8), np.int8)
    k.mg_concatenation(ctypes.byref(p), ptrs, _ptr(out))
    np.testing.assert_array_equal(out, np.concatenate(parts, axis=1))


@pytest.mark.parametrize("shift", [3, -3, 0])
def test_copy_has_memmove_semantics(k, shift):
    buf = np.arange(40, dtype=np.uint8)
    want = buf.copy()
    src, dst, n = 10, 10 + shift, 20
    want[dst:dst + n] = buf[src:src + n].copy()
    base = buf.ctypes.data
    k.mg_copy(base + dst, base + src, n)
    np.testing.assert_array_equal(buf, want)


def _bcast(out_shape, s1, s2) -> Bcast:
    b = Bcast()
    b.count, b.ndims = int(np.prod(out_shape)), len(out_shape)
    for d in range(len(out_shape)):
        b.shape[d], b.stride1[d], b.stride2[d] = out_shape[d], s1[d], s2[d]
    return b


def _strides(shape, out_shape):
    """Element strides of a contiguous input broadcast to out_shape (0 on size-1 dims)."""
    st, acc = [], 1
    for n, o in zip(reversed(shape), reversed(out_shape)):
        st.append(0 if n == 1 and o != 1 else acc)
        acc *= n
    return list(reversed(st))


@pytest.mark.parametrize("fn,ref", [("mg_minimum_s8", np.minimum), ("mg_maximum_s8", np.maximum)])
def test_min_max_equal_numpy_with_broadcast(k, fn, ref):
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (4, 1, 3), dtype=np.int8)
    b = rng.integers(-128, 128, (1, 5, 3), dtype=np.int8)
    out_shape = (4, 5, 3)
    bc = _bcast(out_shape, _strides(a.shape, out_shape), _strides(b.shape, out_shape))
    out = np.zeros(out_shape, np.int8)
    getattr(k, fn)(ctypes.byref(bc), _ptr(a), _ptr(b), _ptr(out))
    np.testing.assert_array_equal(out, ref(a, b))
    flat = Bcast()
    flat.count, flat.ndims = 15, 0                   # same shapes, no broadcast
    x, y = a.reshape(-1)[:12].repeat(2)[:15].copy(), b.reshape(-1)[:15].copy()
    out = np.zeros(15, np.int8)
    getattr(k, fn)(ctypes.byref(flat), _ptr(x), _ptr(y), _ptr(out))
    np.testing.assert_array_equal(out, ref(x, y))
