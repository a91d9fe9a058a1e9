"""convert/tflm_params.py is the one home of TFLite's fixed-point arithmetic (state16's int16
tail and codegen_fast's tables use it): its per-element functions equal their definitions,
computed here with exact rationals, over random and edge inputs, and its Prepare-time
multipliers for int8 and int16 differ only in the left shift. (tests/test_elementwise_tflm.py
and tests/test_state16.py hold the composed ops against the TFLite-Micro interpreter itself.)"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mgrade_edge.convert import codegen_fast, tflm_params as tp

RNG_SEED = 27


def _scale_sets(rng, n: int) -> np.ndarray:
    """[n, 3] float32 (s1, s2, s_out): inputs log-uniform over 2^-16 .. 2^2, the output within
    2^-6 .. 2^3 of the larger one (what calibrated elementwise ops have)."""
    s12 = 2.0 ** rng.uniform(-16, 2, (n, 2))
    so = s12.max(axis=1) * 2.0 ** rng.uniform(-6, 3, n)
    return np.concatenate([s12, so[:, None]], axis=1).astype(np.float32)


def _int32(rng, n):
    edges = [tp.INT32_MIN, tp.INT32_MIN + 1, -1, 0, 1, tp.INT32_MAX - 1, tp.INT32_MAX]
    return np.concatenate([rng.integers(tp.INT32_MIN, tp.INT32_MAX, n, endpoint=True),
                           edges]).astype(np.int64)


def _round_half_away(q: Fraction) -> int:
    """q rounded to the nearest integer, ties away from zero (gemmlowp's rounding)."""
    return int(math.copysign(math.floor(abs(q) + Fraction(1, 2)), q))


def _srdhm_def(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul by definition: round(a * b / 2^31), saturating."""
    if a == b == tp.INT32_MIN:
        return tp.INT32_MAX
    return _round_half_away(Fraction(a * b, 1 << 31))


def _wrap32(v: int) -> int:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def test_srdhm_rdbpot_equal_their_definitions():
    rng = np.random.default_rng(RNG_SEED + 2)
    a = _int32(rng, 1500)
    for b in [*rng.integers(tp.INT32_MIN, tp.INT32_MAX, 6), tp.INT32_MIN, tp.INT32_MAX, 0, 1]:
        got = tp.srdhm(a, int(b)).tolist()
        assert got == [_srdhm_def(int(x), int(b)) for x in a], int(b)
    for e in (0, 1, 5, 15, 31):
        assert tp.rdbpot(a, e).tolist() == [_round_half_away(Fraction(int(x), 1 << e))
                                            for x in a], e


def test_mbqm_is_the_double_rounding_of_its_definition():
    """MultiplyByQuantizedMultiplier: x << shift wrapped to int32 for a positive shift, then
    round(x m / 2^31) and round(/ 2^-shift) for a negative one (two roundings, as TFLM)."""
    rng = np.random.default_rng(RNG_SEED + 3)
    x = np.concatenate([rng.integers(-(1 << 20), 1 << 20, 1500), [0, 1, -1, (1 << 20) - 1]])
    for m, shift in [(1 << 30, -31), ((1 << 31) - 1, 0), (1518500250, -7), (1073741824, 3),
                     (2147483647, -1)]:
        want = []
        for v in x.tolist():
            v = _wrap32(v << shift) if shift > 0 else v
            want.append(_round_half_away(Fraction(_srdhm_def(v, m), 1 << max(0, -shift))))
        assert tp.mbqm(x, m, shift).tolist() == want, (m, shift)


def test_int8_and_int16_add_multipliers_differ_only_in_left_shift():
    """The int8 ADD (left_shift 20) and the int16 one (15) share the input multipliers, and
    the output multiplier absorbs the 2^5 between them."""
    rng = np.random.default_rng(RNG_SEED + 1)
    for s1, s2, so in _scale_sets(rng, 200):
        p8, p16 = (tp.addsub_multipliers(s1, s2, so, ls) for ls in (20, 15))
        assert (p8["left_shift"], p16["left_shift"]) == (20, 15)
        for k in ("input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift"):
            assert p8[k] == p16[k], k
        r8 = p8["output_multiplier"] * 2.0 ** p8["output_shift"]
        r16 = p16["output_multiplier"] * 2.0 ** p16["output_shift"]
        assert r16 == pytest.approx(32 * r8, rel=1e-8)


def test_fast_path_scalar_views_are_tflm_params():
    """codegen_fast's table builders take their per-element arithmetic from tflm_params (no
    second copy): the scalar views give Python ints equal to the array functions."""
    rng = np.random.default_rng(RNG_SEED + 4)
    for s1, s2, so in _scale_sets(rng, 10):
        zp1, zp2, zpo = (int(v) for v in rng.integers(-128, 128, 3))
        p = dict(tp.addsub_multipliers(s1, s2, so, left_shift=20), input1_offset=-zp1,
                 input2_offset=-zp2, output_offset=zpo, act_min=-128, act_max=127)
        a, b = rng.integers(-128, 128, 200), rng.integers(-128, 128, 200)
        got = [codegen_fast.ref_add1(p, int(x), int(y)) for x, y in zip(a, b)]
        assert all(type(v) is int for v in got)
        assert got == tp.add(p, a, b).tolist()


def test_each_supported_op_has_one_params_builder_whose_record_it_fills(tiny_int8):
    """PARAMS_BY_OP holds one builder for each of SUPPORTED_OPS and no other; on every operator
    of a converted model, op_params gives exactly the fields of its builder's typed record."""
    import typing

    from mgrade_edge.convert.tflite_reader import read_tflite

    assert set(tp.PARAMS_BY_OP) == set(tp.SUPPORTED_OPS)
    model = read_tflite((tiny_int8 / "model.tflite").read_bytes())
    seen = set()
    for op in model.operators:
        record = typing.get_type_hints(tp.PARAMS_BY_OP[op.op])["return"]
        assert set(tp.op_params(model, op)) == set(record.__required_keys__), op.op
        seen.add(op.op)
    assert {"FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "ADD", "GATHER", "LOGISTIC"} <= seen
