"""convert/tflm_params.py is the one home of TFLite's fixed-point arithmetic, int8 and int16
(state16's tail, input16's front, ops16, codegen_fast's tables and layouts use it): its
per-element functions equal their definitions, computed here with exact rationals, over random
and edge inputs; its Prepare-time multipliers for int8 and int16 differ only in the left
shift; its int16 operator parameters (requant_params, addsub16_params, mul16_params) with the
per-element functions, and its int8 LOGISTIC, equal the TFLite-Micro interpreter on one-op
models over random scales; its gemmlowp logistic equals the C runtime's (mg_quant.c).
(tests/test_elementwise_tflm.py, tests/test_logistic16.py and tests/test_state16.py hold
int8 ADD/SUB, the int16 LOGISTIC and the composed int16 tail against TFLite-Micro.)"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mgrade_edge.convert import codegen_fast, tflm_params as tp
from mgrade_edge.convert.tflite_reader import read_tflite
from tests.test_bite_quant import q  # noqa: F401  (fixture: mg_quant.c through ctypes)
from tests.tflm_probe import one_op_model, run_one_op

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


def _int16_cases(rng, op: str, n_sets: int):
    """(one-op model, inputs, input dtype, output dtype, parameters) for n_sets random scale
    sets of an int16 op of the widened forms: QUANTIZE int8 -> int16 (every int8 input) and
    int16 -> int8 (every int16 input), ADD / SUB / MUL int16 (random pairs plus the
    extremes), int16 tensors with zero point 0 as convert/widen.py writes them."""
    i16 = np.arange(-32768, 32768)
    for s1, s2, so in _scale_sets(rng, n_sets).tolist():
        zp8 = int(rng.integers(-128, 128))
        if op == "QUANTIZE8to16":
            s16 = s1 * 2.0 ** -rng.uniform(6, 9)
            yield (one_op_model("QUANTIZE", [("INT8", s1, zp8)], ("INT16", s16, 0), 256),
                   [np.arange(-128, 128)], np.int8, np.int16,
                   tp.requant_params(s1, zp8, s16, 0, 16))
        elif op == "QUANTIZE16to8":
            s8 = s1 * 2.0 ** rng.uniform(6, 9)
            yield (one_op_model("QUANTIZE", [("INT16", s1, 0)], ("INT8", s8, zp8), len(i16)),
                   [i16], np.int16, np.int8, tp.requant_params(s1, 0, s8, zp8, 8))
        else:
            n = 20_000
            ab = [np.concatenate([rng.integers(-32768, 32768, n), [-32768, 32767, 0, -32768]]),
                  np.concatenate([rng.integers(-32768, 32768, n), [-32768, 32767, 0, 32767]])]
            p = (tp.mul16_params(s1, s2, so) if op == "MUL"
                 else tp.addsub16_params(s1, s2, so, sub=op == "SUB"))
            model = one_op_model(op, [("INT16", s1, 0), ("INT16", s2, 0)], ("INT16", so, 0),
                                 len(ab[0]))
            yield model, ab, np.int16, np.int16, p


@pytest.mark.parametrize("op", ["QUANTIZE8to16", "QUANTIZE16to8", "ADD", "SUB", "MUL"])
def test_int16_params_and_elementwise_equal_tflm(op):
    """requant_params / addsub16_params / mul16_params with requant / add / sub / mul = the
    TFLite-Micro interpreter's int16 QUANTIZE, ADD, SUB and MUL (the ops of the int16 tail,
    front and ops16), 0 differing outputs over 12 random scale sets each."""
    rng = np.random.default_rng(RNG_SEED + 5 + len(op))
    fn = {"ADD": tp.add, "SUB": tp.sub, "MUL": tp.mul}.get(op)
    bad = []
    for k, (model, xs, in_dtype, out_dtype, p) in enumerate(_int16_cases(rng, op, 12)):
        want = run_one_op(model, xs, in_dtype)
        got = tp.requant(p, xs[0]) if fn is None else fn(p, *xs)
        assert got.min() >= np.iinfo(out_dtype).min and got.max() <= np.iinfo(out_dtype).max
        if (n := int((got != want).sum())):
            bad.append((k, n))
    assert not bad, f"{op}: (scale set, differing outputs): {bad}"


def test_int8_logistic_equals_tflm():
    """logistic_params (read from a one-op .tflite) with logistic = TFLite-Micro's int8
    LOGISTIC on all 256 inputs, over 40 random input scales and zero points."""
    rng = np.random.default_rng(RNG_SEED + 6)
    x = np.arange(-128, 128)
    saturated = set()
    for k in range(40):
        s_in, zp = float(np.float32(2.0 ** rng.uniform(-9, 0))), int(rng.integers(-128, 128))
        model = one_op_model("LOGISTIC", [("INT8", s_in, zp)], ("INT8", 1 / 256, -128), 256)
        m = read_tflite(model)
        p = tp.op_params(m, m.operators[0])
        got = [tp.logistic(p, int(v)) for v in x]
        assert got == run_one_op(model, [x], np.int8).tolist(), (k, s_in, zp)
        saturated |= {got[0], got[-1]}
    assert {-128, 127} <= saturated          # both saturation branches were reached


def test_logistic_q4_equals_the_c_runtime(q):  # noqa: F811
    """logistic_q4 (the gemmlowp logistic the int8 LOGISTIC tables use) = mg_quant.c's
    mg_logistic_q4 on edge values and random Q4.27 inputs."""
    rng = np.random.default_rng(RNG_SEED + 7)
    xs = [0, 1, -1, 1 << 27, -(1 << 27), tp.INT32_MAX, tp.INT32_MIN + 1]
    xs += rng.integers(-16 << 27, 16 << 27, 3000).tolist()
    xs += rng.integers(-(1 << 26), 1 << 26, 1000).tolist()
    for x in xs:
        assert tp.logistic_q4(int(x)) == q.mg_logistic_q4(int(x)), x
