"""convert/tflm_params.py is the one home of TFLite's fixed-point arithmetic: its Prepare-time
multipliers (int8 and int16) and its per-element functions equal, bit for bit, the copies that
convert/state16.py (int16 tail, NumPy) and convert/codegen_fast.py (fast-path tables, Python
ints) still carry, over random and edge inputs. (tests/test_elementwise_tflm.py and
tests/test_state16.py hold them against the TFLite-Micro interpreter itself.)"""
from __future__ import annotations

import numpy as np
import pytest

from mgrade_edge.convert import codegen_fast, state16, tflm_params as tp

RNG_SEED = 27


def _scale_sets(rng, n: int) -> np.ndarray:
    """[n, 3] float32 (s1, s2, s_out): inputs log-uniform over 2^-16 .. 2^2, the output within
    2^-6 .. 2^3 of the larger one (what calibrated elementwise ops have; TFLite refuses an
    output scale so small that the ADD multipliers leave (0, 1))."""
    s12 = 2.0 ** rng.uniform(-16, 2, (n, 2))
    so = s12.max(axis=1) * 2.0 ** rng.uniform(-6, 3, n)
    return np.concatenate([s12, so[:, None]], axis=1).astype(np.float32)


def test_int16_prepare_multipliers_equal_state16s():
    rng = np.random.default_rng(RNG_SEED)
    for s1, s2, so in _scale_sets(rng, 500):
        mult = tp.addsub_multipliers(s1, s2, so, left_shift=15)
        for sub in (False, True):
            ref = state16.addsub16_params(s1, s2, so, sub)
            assert {k: ref[k] for k in mult} == mult
        m, s = tp.mul_multiplier(s1, s2, so)
        ref = state16.mul16_params(s1, s2, so)
        assert (ref["output_multiplier"], ref["output_shift"]) == (m, s)
        m, s = tp.requant_multiplier(s1, so)
        ref = state16.requant_params(s1, 0, so, 0, 16)
        assert (ref["multiplier"], ref["shift"]) == (m, s)


def test_int8_prepare_multipliers_differ_only_in_left_shift():
    """The int8 ADD uses the same multipliers with left_shift 20 (op_params' ADD/SUB)."""
    rng = np.random.default_rng(RNG_SEED + 1)
    for s1, s2, so in _scale_sets(rng, 200):
        p8, p16 = (tp.addsub_multipliers(s1, s2, so, ls) for ls in (20, 15))
        assert p8["left_shift"] == 20 and p16["left_shift"] == 15
        assert p8["input1_multiplier"] == p16["input1_multiplier"]
        assert p8["input2_shift"] == p16["input2_shift"]


def _int32(rng, n):
    edges = [tp.INT32_MIN, tp.INT32_MIN + 1, -1, 0, 1, tp.INT32_MAX - 1, tp.INT32_MAX]
    return np.concatenate([rng.integers(tp.INT32_MIN, tp.INT32_MAX, n, endpoint=True),
                           edges]).astype(np.int64)


def test_element_functions_equal_codegen_fasts_scalar_reference():
    rng = np.random.default_rng(RNG_SEED + 2)
    a = _int32(rng, 2000)
    for b in list(rng.integers(tp.INT32_MIN, tp.INT32_MAX, 20)) + [tp.INT32_MIN, tp.INT32_MAX]:
        got = tp.srdhm(a, int(b))
        assert got.tolist() == [codegen_fast.ref_srdhm(int(x), int(b)) for x in a]
    for e in (0, 1, 5, 15, 31):
        assert tp.rdbpot(a, e).tolist() == [codegen_fast.ref_rdbpot(int(x), e) for x in a]
    x = rng.integers(-(1 << 20), 1 << 20, 2000)
    for m, shift in [(1 << 30, -31), ((1 << 31) - 1, 0), (1518500250, -7), (1073741824, 3)]:
        assert tp.mbqm(x, m, shift).tolist() == \
            [codegen_fast.ref_mbqm(int(v), m, shift) for v in x]


def test_element_functions_equal_state16s_array_reference():
    rng = np.random.default_rng(RNG_SEED + 3)
    a = _int32(rng, 5000)
    for b in rng.integers(0, tp.INT32_MAX, 20):              # state16's range: b >= 0
        assert np.array_equal(tp.srdhm(a, int(b)), state16.srdhm(a, int(b)))
    x = rng.integers(-(1 << 16), 1 << 16, 5000)
    for m, shift in [(1 << 30, -31), (1518500250, -7), (1073741824, 3)]:
        assert np.array_equal(tp.mbqm(x, m, shift), state16.mbqm(x, m, shift))


@pytest.mark.parametrize("bits", [8, 16])
def test_add_sub_mul_requant_equal_both_copies(bits):
    """The elementwise ops on int8 or int16 grids with parameters from the shared Prepare
    helpers: equal to state16's (int16) and codegen_fast's (int8 ADD, requant) references."""
    rng = np.random.default_rng(RNG_SEED + bits)
    lo, hi = (-128, 127) if bits == 8 else (-32768, 32767)
    a, b = rng.integers(lo, hi, 3000, endpoint=True), rng.integers(lo, hi, 3000, endpoint=True)
    for s1, s2, so in _scale_sets(rng, 20):
        if bits == 16:
            p = state16.addsub16_params(s1, s2, so, False)
            assert np.array_equal(tp.add(p, a, b), state16.add(p, a, b))
            assert np.array_equal(tp.sub(p, a, b), state16.sub(p, a, b))
            p = state16.mul16_params(s1, s2, so)
            assert np.array_equal(tp.mul(p, a, b), state16.mul(p, a, b))
            p = state16.requant_params(s1, 0, so, 0, 8)
            assert np.array_equal(tp.requant(p, a), state16.requant(p, a))
        else:
            zp1, zp2, zpo = (int(v) for v in rng.integers(-128, 128, 3))
            p = dict(tp.addsub_multipliers(s1, s2, so, left_shift=20), input1_offset=-zp1,
                     input2_offset=-zp2, output_offset=zpo, act_min=-128, act_max=127)
            ref = [codegen_fast.ref_add1(p, int(x), int(y)) for x, y in zip(a[:500], b[:500])]
            assert tp.add(p, a[:500], b[:500]).tolist() == ref
            m, s = tp.requant_multiplier(s1, so)
            p = dict(input_offset=zp1, output_offset=zpo, multiplier=m, shift=s, act_min=-128,
                     act_max=127)
            assert tp.requant(p, a).tolist() == [codegen_fast.ref_requant1(p, int(v)) for v in a]
