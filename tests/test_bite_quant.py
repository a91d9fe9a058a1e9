"""The C fixed-point primitives (mcu/runtime/mg_quant.c) against their definitions.

int8 kernels round their 32-bit intermediates to 8 bits, so a one-unit error in the Q0.31
arithmetic rarely shows at the kernel outputs the TFLite-Micro comparisons look at. Here the
primitives are called directly (compiled for the host, through ctypes) and compared with
exact integer / float definitions written from the gemmlowp documentation:

- SaturatingRoundingDoublingHighMul(a, b) = floor((a * b + 2^30) / 2^31), INT32_MAX when
  a = b = INT32_MIN (the only overflow);
- RoundingDivideByPOT(x, e) = x / 2^e rounded to nearest, ties away from zero;
- MultiplyByQuantizedMultiplier(x, m, s) = RDBPOT(SRDHM(x * 2^max(s,0), m), max(-s, 0));
- logistic in Q4.27 -> Q0.31: within 2^-23 of 1 / (1 + exp(-x / 2^27)), and
  logistic(x) + logistic(-x) = 2^31 - 1 (gemmlowp computes the negative side as one minus).
"""
from __future__ import annotations

import ctypes
import math
import random
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
I32_MIN, I32_MAX = -2 ** 31, 2 ** 31 - 1


@pytest.fixture(scope="module")
def q(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("host gcc not installed")
    so = tmp_path_factory.mktemp("quant") / "libmgquant.so"
    subprocess.run(["gcc", "-std=c99", "-O1", "-shared", "-fPIC", "-I", str(RUNTIME),
                    str(RUNTIME / "mg_quant.c"), "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
    i32 = ctypes.c_int32
    for name, args in (("mg_srdhm", [i32, i32]), ("mg_rdbpot", [i32, ctypes.c_int]),
                       ("mg_mbqm", [i32, i32, ctypes.c_int]), ("mg_logistic_q4", [i32])):
        getattr(lib, name).restype = i32
        getattr(lib, name).argtypes = args
    return lib


def ref_srdhm(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    return (a * b + 2 ** 30) // 2 ** 31            # Python // is floor division


def ref_rdbpot(x: int, e: int) -> int:
    v = Fraction(x, 2 ** e)
    lo = math.floor(v)
    frac = v - lo
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and v > 0):
        return lo + 1
    return lo


def ref_mbqm(x: int, m: int, s: int) -> int:
    shifted = (x * 2 ** max(s, 0) + 2 ** 31) % 2 ** 32 - 2 ** 31    # int32 wrap
    return ref_rdbpot(ref_srdhm(shifted, m), max(-s, 0))


def _ints(rng, n, lo=I32_MIN, hi=I32_MAX):
    edges = [lo, hi, 0, 1, -1, lo + 1, hi - 1, 2 ** 30, -2 ** 30]
    return [v for v in edges if lo <= v <= hi] + [rng.randint(lo, hi) for _ in range(n)]


def test_srdhm_equals_definition(q):
    rng = random.Random(0)
    pairs = [(a, b) for a in _ints(rng, 40) for b in _ints(rng, 40)]
    pairs += [(I32_MIN, I32_MIN), (I32_MIN, I32_MAX)]
    # exact ties: a * b = (2k + 1) * 2^30
    pairs += [(2 ** 15 * k, 2 ** 15) for k in (-3, -1, 1, 3, 5)]
    for a, b in pairs:
        assert q.mg_srdhm(a, b) == ref_srdhm(a, b), (a, b)


def test_rdbpot_equals_definition(q):
    rng = random.Random(1)
    for e in range(0, 31):
        half = 2 ** max(e - 1, 0)                    # x = +-(2^e + half): exact ties
        for x in _ints(rng, 30) + [3, -3, 5, -5, 2 ** e + half, -(2 ** e) - half]:
            if I32_MIN <= x <= I32_MAX:
                assert q.mg_rdbpot(x, e) == ref_rdbpot(x, e), (x, e)


def test_mbqm_equals_definition(q):
    rng = random.Random(2)
    for _ in range(3000):
        m = rng.randint(2 ** 30, I32_MAX)           # normalised multipliers in [0.5, 1)
        s = rng.randint(-20, 6)
        x = rng.randint(-2 ** 20, 2 ** 20) if s > 0 else rng.randint(I32_MIN, I32_MAX)
        assert q.mg_mbqm(x, m, s) == ref_mbqm(x, m, s), (x, m, s)


def test_logistic_q4_close_to_float_and_symmetric(q):
    rng = random.Random(3)
    xs = [0, 1, -1, 2 ** 27, -2 ** 27, 2 ** 25, 2 ** 26 + 12345, I32_MAX, I32_MIN + 1]
    xs += [rng.randint(-16 * 2 ** 27, 16 * 2 ** 27) for _ in range(4000)]
    xs += [rng.randint(-2 ** 26, 2 ** 26) for _ in range(2000)]
    worst = 0.0
    for x in xs:
        got = q.mg_logistic_q4(x) / 2 ** 31
        want = 1.0 / (1.0 + math.exp(-x / 2 ** 27))
        worst = max(worst, abs(got - want))
        if x != 0:
            assert q.mg_logistic_q4(x) + q.mg_logistic_q4(-x) == I32_MAX, x
    assert worst < 2 ** -23, f"logistic max error {worst:.3g} (> 2^-23)"
