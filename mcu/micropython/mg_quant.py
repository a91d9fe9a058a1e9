"""TFLite-Micro's integer requantization and fixed-point logistic, in plain Python ints.

The same arithmetic as mcu/runtime/mg_quant.c (double rounding: SaturatingRoundingDoubling-
HighMul, then RoundingDivideByPOT), written so that it runs unchanged under MicroPython (on
any port: ints promote to arbitrary precision where a 32-bit word would overflow) and under
CPython, where convert/codegen_micropython.py uses it to tabulate the 256-entry tables of the
single-input int8 ops (LOGISTIC, RELU, QUANTIZE). All values are int32 in two's complement.
"""

INT32_MIN = -2147483648
INT32_MAX = 2147483647
_NUDGE = 1 << 30
_NNUDGE = 1 - (1 << 30)


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: round(a * b / 2^31), halves away from zero."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    if ab >= 0:
        return (ab + _NUDGE) >> 31
    return -((_NUDGE - 1 - ab) >> 31)      # (ab + 1 - 2^30) / 2^31, truncated toward 0


def rdbpot(x, e):
    """RoundingDivideByPOT: x / 2^e, halves away from zero."""
    mask = (1 << e) - 1
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > thr else 0)


def shl_wrap(x, s):
    """x * 2^s wrapped to int32 (the reference's x * (1 << s))."""
    v = (x << s) & 0xFFFFFFFF
    return v - 0x100000000 if v & 0x80000000 else v


def mbqm(x, m, s):
    """MultiplyByQuantizedMultiplier(x, m, s)."""
    if s > 0:
        return rdbpot(srdhm(shl_wrap(x, s), m), 0)
    return rdbpot(srdhm(x, m), -s)


def mbqm_small(x, m, s):
    """MultiplyByQuantizedMultiplierSmallerThanOneExp(x, m, s) (s <= 0)."""
    return rdbpot(srdhm(x, m), -s)


def clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


# ---- gemmlowp fixed-point logistic on int32 raw values (mg_quant.c) --------------------------

def _sat_shl(x, e):
    thr = (1 << (31 - e)) - 1
    if x > thr:
        return INT32_MAX
    if x < -thr:
        return INT32_MIN
    return shl_wrap(x, e)


def _half_sum(a, b):
    s = a + b
    return (s + 1) // 2 if s >= 0 else -((-s + 1) // 2)


def _exp_quarter(a):
    c = 1895147668
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    poly = rdbpot(srdhm(rdbpot(x4, 2) + x3, 715827883) + x2, 1)
    return c + srdhm(c, x + poly)


_BARREL = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401)


def _exp_neg_q4(a):
    quarter = 1 << 25
    amq = (a & (quarter - 1)) - quarter
    result = _exp_quarter(_sat_shl(amq, 4))
    rem = amq - a
    for k in range(6):
        if rem & (1 << (27 + k - 2)):
            result = srdhm(result, _BARREL[k])
    return INT32_MAX if a == 0 else result


def _one_over_one_plus(a):
    half = _half_sum(a, INT32_MAX)
    x = 1515870810 + srdhm(half, -1010580540)
    for _ in range(3):
        x = x + _sat_shl(srdhm(x, (1 << 29) - srdhm(half, x)), 2)
    return _sat_shl(x, 1)


def logistic_q4(x):
    """logistic(x) for x in Q4.27, result in Q0.31."""
    if x == 0:
        return 1 << 30
    pos = _one_over_one_plus(_exp_neg_q4(-x if x > 0 else x))
    return pos if x > 0 else INT32_MAX - pos


def logistic1(q, zp, radius, mult, left_shift):
    """int8 LOGISTIC of one value (TFLM reference_integer_ops::Logistic)."""
    x = q - zp
    if x <= -radius:
        return -128
    if x >= radius:
        return 127
    return clamp(rdbpot(logistic_q4(mbqm(x, mult, left_shift)), 23) - 128, -128, 127)


def requant1(q, in_off, out_off, mult, shift, lo, hi):
    """int8 -> int8 requantization (QUANTIZE, RELU): out_off + mbqm(q - in_off)."""
    return clamp(out_off + mbqm(q - in_off, mult, shift), lo, hi)
