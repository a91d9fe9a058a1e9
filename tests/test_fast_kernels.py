"""The fast int8 kernels (mcu/runtime/mg_fast.h, data from convert/codegen_fast.py) against
the reference kernels (mg_kernels.c / mg_elem.h), byte for byte, on random shapes and data:
FULLY_CONNECTED (depth and width 1..160, per-channel and per-tensor, right/zero/left shifts),
ADD/SUB/MUL elements from random TFLM-style scales, and the 256-entry LOGISTIC/RELU tables the
generator computes with its Python port of the reference arithmetic, and the requantization
primitives (mg_fq_srdhm_b, mg_fq_mul_round) on 20,000 operand sets each. Built and run on the
host (DSP instructions in plain C; with and without the 64-bit multiply), on QEMU Cortex-M4
(real SMLAD/SXTB16/SMMLAR, and the plain-C definitions on the same core), Cortex-M0 and lx106.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from benchmarks import fc_kernel_cost as fk
from benchmarks import mcu_cost as mc

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return fk.write_cases(tmp_path_factory.mktemp("fast_cases"), n_fc=40, n_el=30, seed=3)


def _check(res):
    assert res["fc_cases"] == 44 and res["el_cases"] == 30 and res["lut_cases"] == 12
    assert res["fc_bad"] == 0, f"{res['fc_bad']} FC output bytes differ"
    assert res["el_bad"] == 0, f"{res['el_bad']} ADD/SUB/MUL elements differ"
    assert res["lut_bad"] == 0, f"{res['lut_bad']} table entries differ from the C reference"
    assert res["rq_cases"] == 120000
    assert res["rq_bad"] == 0, f"{res['rq_bad']} requantization primitives differ"
    assert res["exit_code"] == 0


@pytest.mark.parametrize("mul64_call", [False, True], ids=["smull", "halves"])
def test_host(cases, tmp_path, mul64_call):
    """Host gcc; `halves` forces the requantization products of the cores without a 64-bit
    multiply (Cortex-M0, lx106) on the host too."""
    _check(fk.build_and_run("host", cases, tmp_path,
                            defines=["MG_MUL64_CALL=1"] if mul64_call else ()))


def test_qemu_cm0(cases, tmp_path):
    """Cortex-M0 code (no DSP, no SMULL: the plain-C dots and the 16-bit-halves products), run
    on the an385's memory map (the cases do not fit the micro:bit)."""
    t = mc.TARGETS["qemu-cm0-an385"]
    if not mc.have(t["cc"], t["qemu"][0]):
        pytest.skip("arm toolchain / qemu not installed")
    _check(fk.build_and_run("qemu-cm0-an385", cases, tmp_path))


@pytest.mark.parametrize("emulated", [False, True], ids=["dsp", "plain-c-dsp"])
def test_qemu_cm4(cases, tmp_path, emulated):
    t = mc.TARGETS["qemu-cm4"]
    if not mc.have(t["cc"], t["qemu"][0]):
        pytest.skip("arm toolchain / qemu not installed")
    res = fk.build_and_run("qemu-cm4", cases, tmp_path, fast_emulated=emulated)
    _check(res)
    if not emulated:
        # the FC micro-benchmark: the SMLAD dot products <= 1.5 instructions per MAC from
        # 64x64 on, and the whole fast FC well below the reference
        by_shape = dict(zip(fk.BENCH_SHAPES, res["bench"]))
        for shape in [(64, 64), (128, 128), (256, 256)]:
            b = by_shape[shape]
            assert b["dot_instr_per_mac"] <= 1.5, (shape, b)
            assert b["fast_instr_per_mac"] < b["ref_instr_per_mac"] / 3, (shape, b)


def test_xtensa(cases, tmp_path):
    t = mc.TARGETS["xtensa-lx106"]
    if not mc.have(t["cc"], t["qemu"][0]):
        pytest.skip("xtensa toolchain / qemu not installed")
    _check(fk.build_and_run("xtensa-lx106", cases, tmp_path))


def test_layout_refuses_inexact_cases():
    """ffc_layout keeps the reference kernel where the fast one could not be exact."""
    from mgrade_edge.convert.codegen_fast import ffc_layout

    p = dict(batches=1, accum_depth=4, output_depth=1, input_offset=0, filter_offset=0,
             output_offset=0, act_min=-128, act_max=127, per_channel=1,
             multiplier=[1 << 30], shift=[-1])
    ok, why = ffc_layout(np.array([[1, 2, 3, 4]], np.int8), None, p)
    assert ok is not None and why is None
    bad, why = ffc_layout(np.array([[-1, -128, 3, 4]], np.int8), None, p)
    assert bad is None and "-128" in why
    bad, why = ffc_layout(np.ones((1, 4), np.int8), None, dict(p, filter_offset=3))
    assert bad is None and "zero point" in why
    big = dict(p, accum_depth=600)
    bad, why = ffc_layout(np.full((1, 600), 127, np.int8), None, big)
    assert bad is None and "bound" in why


def test_fdot16_w16_layout_pairs_with_packed_input():
    """fdot16_w16_layout's words, walked as mg_fdot16_w16 walks them (per group, per block: the
    packed inputs (u0, u2), (u1, u3) of mg_fpack16, then per row 2 SMLADs of its two words),
    give every row's dot over the full blocks, on shapes off the 4 x 4 grid and at the int8
    and int16 extremes (the bit-exact C/assembly check is tests/test_mcu_model.py
    ::test_int16_input_odd_shapes_bit_exact)."""
    from mgrade_edge.convert.codegen_fast import fdot16_w16_layout

    def half(v, k):     # signed halfword k of a uint32 word
        return int(np.int16(np.uint16((int(v) >> (16 * k)) & 0xFFFF)))

    rng = np.random.default_rng(5)
    for n_out, depth in [(1, 4), (4, 4), (6, 6), (7, 13), (13, 3), (24, 24)]:
        w = rng.integers(-128, 128, (n_out, depth)).astype(np.int8)
        w[0, :] = -128
        u = rng.integers(-32768, 32768, depth).astype(np.int64)
        u[:2] = -32768
        words = fdot16_w16_layout(w)
        groups, blocks = (n_out + 3) // 4, depth // 4
        assert words.dtype == np.uint32 and words.size == groups * blocks * 8
        got = np.zeros(4 * groups, np.int64)
        for g in range(groups):
            for k in range(blocks):
                x0 = [u[4 * k], u[4 * k + 2]]           # mg_fpack16's two words
                x1 = [u[4 * k + 1], u[4 * k + 3]]
                for j in range(4):
                    w0, w1 = words[((g * blocks + k) * 4 + j) * 2:][:2]
                    got[4 * g + j] += sum(half(w0, h) * x0[h] + half(w1, h) * x1[h]
                                          for h in (0, 1))
        want = w[:, :4 * blocks].astype(np.int64) @ u[:4 * blocks]
        assert np.array_equal(got[:n_out], want), (n_out, depth)
        assert not got[n_out:].any()                   # the padding rows are zero


def test_python_reference_arithmetic():
    """The generator's Python srdhm/rdbpot (convert/tflm_params.py) agree with the closed forms the fast C
    path uses (floor((a b + 2^30) / 2^31); (x + 2^(e-1) - (x < 0)) >> e) on edge values."""
    from mgrade_edge.convert.tflm_params import rdbpot, srdhm

    rng = np.random.default_rng(0)
    vals = [0, 1, -1, 2**30, -2**30, 2**31 - 1, -2**31] + \
        [int(v) for v in rng.integers(-2**31, 2**31, size=300)]
    mults = [0, 1, 2**30, 2**31 - 1] + [int(v) for v in rng.integers(2**30, 2**31, size=50)]
    for a in vals:
        for b in mults[:12]:
            assert int(srdhm(a, b)) == (a * b + 2**30) >> 31, (a, b)
        for e in range(1, 31):
            if abs(a) < 2**30:
                assert int(rdbpot(a, e)) == (a + (1 << (e - 1)) - (a < 0)) >> e, (a, e)


def test_g_split_tables_exact():
    """g() as two tables split at a per-channel dot threshold equals the op-by-op reference
    (RELU branch, LOGISTIC(MINIMUM(p, 0)), ADD) for every reachable dot product, and is
    refused where the sigmoid branch still varies above the threshold."""
    import math

    from mgrade_edge.convert.tflm_params import logistic, quantize_multiplier
    from mgrade_edge.convert.codegen_fast import chan_table, g_split_tables, ref_add1, ref_mbqm

    rng = np.random.default_rng(5)
    H, bound = 3, 3000
    bias = [int(v) for v in rng.integers(-200, 200, size=H)]
    mp = [quantize_multiplier(float(v)) for v in rng.uniform(1 / 90, 1 / 40, size=H)]
    mr = [quantize_multiplier(float(v)) for v in rng.uniform(1 / 60, 1 / 20, size=H)]
    cand_p = dict(output_offset=127, act_min=-128, act_max=127)
    relu_p = dict(output_offset=-128, act_min=-128, act_max=127)
    cand_rows = chan_table(bias, [m for m, _ in mp], [s for _, s in mp])
    relu_rows = chan_table(bias, [m for m, _ in mr], [s for _, s in mr])
    q, ls = math.frexp(0.03 * float(1 << 27))
    sig_p = dict(input_zero_point=127, input_range_radius=math.floor(15.0 * (1 << 27) / 2.0 ** ls),
                 input_multiplier=int(round(q * (1 << 31))), input_left_shift=ls)
    add_g = fk._add_params(rng, False)
    got = g_split_tables(cand_rows, cand_p, relu_rows, relu_p, [bound] * H, None, sig_p, 127,
                         add_g)
    assert got is not None
    split, g_neg, g_pos = got

    def requant(row, p, d):
        y = ref_mbqm(d + row[0], row[1], -row[2]) + p["output_offset"]
        return max(p["act_min"], min(p["act_max"], y))

    for c in range(H):
        # the split is the last dot at which the RELU branch is still at its lowest value
        r_lo = requant(relu_rows[c], relu_p, -bound)
        assert requant(relu_rows[c], relu_p, split[c]) == r_lo
        assert requant(relu_rows[c], relu_p, split[c] + 1) != r_lo
        for d in range(-bound, bound + 1, 7):
            pv, r = requant(cand_rows[c], cand_p, d), requant(relu_rows[c], relu_p, d)
            want = ref_add1(add_g, r, logistic(sig_p, min(pv, 127)))
            table = g_neg[pv + 128] if d <= split[c] else g_pos[r + 128]
            assert table == want, (c, d, split[c])
    # a MINIMUM constant above the candidate's saturation: the sigmoid branch varies above the
    # threshold, so the split must be refused
    wide_p = dict(cand_p, output_offset=0)
    assert g_split_tables(cand_rows, wide_p, relu_rows, relu_p, [bound] * H, None, sig_p, 127,
                          add_g) is None


def test_g_split_tables_int16_input_exact():
    """The same two tables for the int16 minGRU input (mg_mingru_fast_u16): the 16x8 FCs give
    int16 outputs that QUANTIZE to int8 (p8, r8) before the candidate's int8 part; g from the
    tables equals the op-by-op reference on every sampled dot (all dots near each split)."""
    import math

    from mgrade_edge.convert.tflm_params import logistic, quantize_multiplier
    from mgrade_edge.convert.codegen_fast import (chan_table, g_split_tables, ref_add1,
                                                  ref_mbqm, ref_requant1)

    rng = np.random.default_rng(8)
    H, bound = 4, 400_000
    bias = [int(v) for v in rng.integers(-20_000, 20_000, size=H)]
    mp = [quantize_multiplier(float(v)) for v in rng.uniform(1 / 12, 1 / 5, size=H)]
    mr = [quantize_multiplier(float(v)) for v in rng.uniform(1 / 10, 1 / 3, size=H)]
    cand_p = dict(output_offset=0, act_min=-32768, act_max=32767)
    relu_p = dict(output_offset=0, act_min=0, act_max=32767)        # RELU fused in the FC
    m8, s8 = quantize_multiplier(1 / 97)
    p8 = dict(input_offset=0, output_offset=127, multiplier=m8, shift=s8, act_min=-128,
              act_max=127)
    r8 = dict(p8, output_offset=-128)
    cand_rows = chan_table(bias, [m for m, _ in mp], [s for _, s in mp])
    relu_rows = chan_table(bias, [m for m, _ in mr], [s for _, s in mr])
    q, ls = math.frexp(0.03 * float(1 << 27))
    sig_p = dict(input_zero_point=127, input_range_radius=math.floor(15.0 * (1 << 27) / 2.0 ** ls),
                 input_multiplier=int(round(q * (1 << 31))), input_left_shift=ls)
    add_g = fk._add_params(rng, False)
    got = g_split_tables(cand_rows, cand_p, relu_rows, relu_p, [bound] * H, None, sig_p, 127,
                         add_g, p8, r8)
    assert got is not None
    split, g_neg, g_pos = got

    def out16(row, p, d):
        y = ref_mbqm(d + row[0], row[1], -row[2]) + p["output_offset"]
        return max(p["act_min"], min(p["act_max"], y))

    for c in range(H):
        r_lo = ref_requant1(r8, out16(relu_rows[c], relu_p, -bound))
        assert ref_requant1(r8, out16(relu_rows[c], relu_p, split[c] + 1)) != r_lo
        dots = np.concatenate([np.arange(split[c] - 3000, split[c] + 3000),
                               rng.integers(-bound, bound + 1, size=3000), [-bound, bound]])
        for d in dots.tolist():
            pv = ref_requant1(p8, out16(cand_rows[c], cand_p, d))
            r = ref_requant1(r8, out16(relu_rows[c], relu_p, d))
            want = ref_add1(add_g, r, logistic(sig_p, min(pv, 127)))
            table = g_neg[pv + 128] if d <= split[c] else g_pos[r + 128]
            assert table == want, (c, d, split[c])
