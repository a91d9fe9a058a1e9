/* fast_check.c - the fast kernels (mg_fast.h) against the reference kernels, byte for byte, on
 * the random cases of fast_cases.c (written by tests/test_fast_kernels.py), plus timing of the
 * FC kernel on the cases marked for the micro-benchmark. One summary line:
 *   MGFAST fc_cases=.. fc_bad=.. el_cases=.. el_bad=.. lut_cases=.. lut_bad=.. rq_cases=..
 *          rq_bad=..
 *          bench<k>_macs=.. bench<k>_dot=.. bench<k>_fast=.. bench<k>_ref=.. calib_ticks=.. ...
 * (ticks of one call: the dot products only, the whole fast FC, the reference FC). With
 * -DMG_HOST the platform is stdio (no timing). */
#include "fast_cases.h"
#include "mg_elem.h"

#ifdef MG_HOST
#include <stdio.h>
#include <stdlib.h>
static void mg_test_platform_init(void) {}
static void mg_test_puts(const char *s) { fputs(s, stdout); }
static uint32_t mg_test_ticks(void) { return 0u; }
static uint32_t mg_test_ticks_since(uint32_t t0) { (void)t0; return 0u; }
static uint32_t mg_test_calibrate(uint32_t *n) { *n = 0u; return 0u; }
static void mg_test_exit(int code) { exit(code); }
#else
#include "mg_test_platform.h"
#endif
#include "mg_test_print.h"

static int8_t out_ref[FC_MAX_OUT];
static int8_t out_fast[FC_MAX_OUT];
static uint32_t xq[FC_MAX_XQ];
static int32_t acc[FC_MAX_ACC];

static uint32_t compare(const int8_t *a, const int8_t *b, int32_t n)
{
    uint32_t bad = 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        bad += a[i] != b[i] ? 1u : 0u;
    }
    return bad;
}

/* The requantization primitives against the reference (mg_quant.c) on n pseudo-random
 * operands in their stated ranges, with the edges mixed in: mg_fq_srdhm_b(a, m) = mg_srdhm
 * for -2^30 <= a < 2^30, 0 <= m < 2^31 (SMULL, or 16-bit halves where MG_MUL64_CALL), and
 * mg_fq_mul_round(a, m, e, zp) = mg_rdbpot(mg_srdhm(a, m), e) + zp for 0 <= e <= 20,
 * |zp| <= 256 (SMMLAR with the DSP extension; small negative a whose product rounds to 0
 * included); mg_fq_mbqm_w of 15-bit operands and mg_fadd16_in of int16 values (two 32-bit
 * products where MG_MUL64_CALL). Returns the number of differing results. */
static uint32_t requant_primitives(int32_t n, int32_t *cases)
{
    static const int32_t edges[] = {-1073741824, 1073741823, 0, -1, 1, -2, -65536, 65535,
                                    -65537, 65536, -32768, 32767, -256, 255};
    const int32_t ne = (int32_t)(sizeof edges / sizeof edges[0]);
    uint32_t s = 12345u, bad = 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t a, m, e, zp, y;
        s = s * 1664525u + 1013904223u;
        a = (int32_t)s >> 1;                                   /* [-2^30, 2^30) */
        if (i % 4 == 1) {
            a >>= (s >> 3) % 31u;                              /* small magnitudes too */
        } else if (i % 4 == 2) {
            a = edges[(s >> 7) % (uint32_t)ne];
        }
        s = s * 1664525u + 1013904223u;
        m = (int32_t)(s >> 1);                                 /* [0, 2^31) */
        if (i % 8 == 3) {
            m = (int32_t)(s >> ((s & 15u) + 1u));
        } else if (i % 8 == 5) {
            m = (i & 16) ? 2147483647 : 1073741824;
        }
        e = (int32_t)((s >> 5) % 21u);
        zp = (int32_t)((s >> 11) % 513u) - 256;
        y = mg_srdhm(a, m);
        bad += mg_fq_srdhm_b(a, m) != y ? 1u : 0u;
        bad += mg_fq_mul_round(a, m, (int)e, zp) != mg_rdbpot(y, (int)e) + zp ? 1u : 0u;
        bad += mg_fq_mul_round(a, m, (int)e, 0) != mg_rdbpot(y, (int)e) ? 1u : 0u;
        /* 15-bit operands (mg_fq_srdhm_small where MG_MUL64_CALL) and the int16 ADD input
         * x << 15 (mg_fadd16_in) */
        {
            const int32_t a15 = a >> 16, x16 = a >> 15;
            bad += mg_fq_mbqm_w(a15, m, -(int)e, 15) != mg_rdbpot(mg_srdhm(a15, m), (int)e);
            bad += mg_fq_mbqm_w(a15 >> 1, m, 1, 14) != mg_srdhm((a15 >> 1) * 2, m);
            bad += mg_fadd16_in(x16, 15, m, -(int)e) !=
                   mg_rdbpot(mg_srdhm(x16 * 32768, m), (int)e);
        }
    }
    *cases = 6 * n;
    return bad;
}

int main(void)
{
    uint32_t fc_bad = 0, el_bad = 0, lut_bad = 0, rq_bad, calib_instr = 0, calib;
    int32_t k, i, rq_cases;
    mg_test_platform_init();
    calib = mg_test_calibrate(&calib_instr);
    mg_test_puts("MGFAST ");
    for (k = 0; k < FC_NUM_CASES; ++k) {
        const fc_case_t *c = &fc_cases[k];
        uint32_t t0, t_dot, t_fast, t_ref;
        t0 = mg_test_ticks();
        mg_fully_connected_s8(&c->ref, c->x, c->w, c->bias, out_ref);
        t_ref = mg_test_ticks_since(t0);
        t0 = mg_test_ticks();
        mg_ffc_s8(&c->fast, c->x, xq, acc, out_fast);
        t_fast = mg_test_ticks_since(t0);
        t0 = mg_test_ticks();
        mg_ffc_dot(xq, c->fast.w, c->fast.blocks, (c->fast.n_out + 3) >> 2, acc);
        t_dot = mg_test_ticks_since(t0);
        fc_bad += compare(out_ref, out_fast, c->fast.n_out);
        if (c->bench) {
            char key[24] = "bench0_";
            key[5] = (char)('0' + c->bench);
            mg_test_put_u32("bench_id", (uint32_t)c->bench);
            mg_test_put_u32("bench_macs", (uint32_t)(c->fast.depth * c->fast.n_out));
            mg_test_put_u32("bench_dot", t_dot);
            mg_test_put_u32("bench_fast", t_fast);
            mg_test_put_u32("bench_ref", t_ref);
            (void)key;
        }
    }
    for (k = 0; k < EL_NUM_CASES; ++k) {
        const el_case_t *c = &el_cases[k];
        for (i = 0; i < c->n; ++i) {
            int8_t r, f;
            if (c->kind == 0) {
                r = mg_add1_s8(&c->add, c->a[i], c->b[i]);
                f = mg_fadd1(&c->add, c->a[i], c->b[i]);
            } else if (c->kind == 1) {
                r = mg_sub1_s8(&c->add, c->a[i], c->b[i]);
                f = mg_fsub1(&c->add, c->a[i], c->b[i]);
            } else {
                r = mg_mul1_s8(&c->mul, c->a[i], c->b[i]);
                f = mg_fmul1(&c->mul, c->a[i], c->b[i]);
            }
            el_bad += r != f ? 1u : 0u;
        }
    }
    for (k = 0; k < LUT_NUM_CASES; ++k) {
        const lut_case_t *c = &lut_cases[k];
        for (i = -128; i < 128; ++i) {
            const int8_t r = c->kind == 0 ? mg_logistic1_s8(&c->logistic, (int8_t)i)
                                          : mg_requant1_s8(&c->requant, (int8_t)i);
            lut_bad += r != c->table[i + 128] ? 1u : 0u;
        }
    }
    mg_test_put_u32("fc_cases", FC_NUM_CASES);
    mg_test_put_u32("fc_bad", fc_bad);
    mg_test_put_u32("el_cases", EL_NUM_CASES);
    mg_test_put_u32("el_bad", el_bad);
    mg_test_put_u32("lut_cases", LUT_NUM_CASES);
    mg_test_put_u32("lut_bad", lut_bad);
    rq_bad = requant_primitives(20000, &rq_cases);
    mg_test_put_u32("rq_cases", (uint32_t)rq_cases);
    mg_test_put_u32("rq_bad", rq_bad);
    mg_test_put_u32("calib_ticks", calib);
    mg_test_put_u32("calib_instr", calib_instr);
    mg_test_puts("\n");
    mg_test_exit((fc_bad || el_bad || lut_bad || rq_bad) ? 1 : 0);
    return 0;
}
