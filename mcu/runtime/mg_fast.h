/* mg_fast.h - the fast int8 path: same results as the reference kernels, fewer instructions.
 *
 * Path selection (compile time):
 *   MG_FAST = 1  the generated package calls these kernels (re-laid weights, folded biases,
 *                256-entry tables, exact 32-bit arithmetic where provably identical);
 *   MG_FAST = 0  the portable reference kernels (mg_kernels.h, mg_delay.h, mg_mingru.h).
 * Default: 1 on every target (0 with MG_SINGLE_ROUNDING, which only the portable kernels
 * implement). With the Arm DSP extension (__ARM_FEATURE_DSP: Cortex-M4/M7/M33/M55) the fast
 * kernels use the DSP instructions; elsewhere (Cortex-M0/M3, RISC-V, Xtensa, the host) the
 * same kernels run with the DSP instructions written in plain C (bit-identical definitions),
 * which was measured faster than the portable path on every core family (instructions/step
 * under QEMU -icount, benchmarks/mcu_cost.py --cores, docs/speed.md "Every core"). -DMG_FAST=0
 * selects the portable kernels; both paths are compared byte for byte on every target.
 *
 * The DSP primitives come from arm_acle.h (SXTB16, UXTB16, SMLAD, SSUB16, SSAT) when
 * __ARM_FEATURE_DSP is set and MG_DSP_EMULATE is not defined.
 *
 * FC weight layout (made by convert/codegen_fast.py): output channels in groups of 4 (the last
 * group padded with zero rows), the depth in blocks of 4 (padded with zero columns); per group,
 * per block, 16 bytes: channel 0's 4 bytes, channel 1's, 2's, 3's. In each pair of bytes
 * (b_lo, b_hi) the high byte is stored as b_hi - (b_lo < 0), so the halfword (bits 0-15 or
 * 16-31 of the stored 32-bit word: the layout is defined on word values) is exactly
 * 256 b_hi + b_lo (|b| <= 127, checked by the generator). With the input block
 * (x0..x3) expanded once into P = (x1 - 127, x3 - 127) and R = (256 x0 - P0, 256 x2 - P1)
 * (both exact int16), one block of one channel is
 *     SMLAD(W, P) + SMLAD(SXTB16(W), R) = 256 * sum_k b_k x'_k,   x' = x (even k), x - 127 (odd)
 * i.e. 4 instructions (LDR, SXTB16, SMLAD, SMLAD) per 4 MACs. The generator folds the input
 * zero point and the 127 of the odd inputs into the bias and checks 256 * |dot| < 2^31.
 * With the DSP extension and GCC, mg_ffc_dot is Thumb-2 assembly (mg_fast.c: one LDRD for the
 * input pair, one LDM for the 4 channels' words: 14 instructions per 16 MACs); without it the
 * same sum is taken as h0 P0 + h1 P1 + b0 R0 + b2 R1 of each word's halfwords and bytes 0, 2
 * (no plain-C SMLAD/SXTB16 forms), and the 16x8 dots of the int16 minGRU input as direct
 * multiply-accumulates.
 *
 * Requantization: the SRDHM + rounding right shift of TFLM's MultiplyByQuantizedMultiplier as
 * one SMMLAR (DSP) or SMULL + ADDs where the operand is below 2^30 (mg_fq_mul_round); on cores
 * without a 32x32 -> 64-bit multiply (MG_MUL64_CALL: Cortex-M0, lx106) from 16-bit halves or
 * two 32-bit products instead of a libgcc call. Every form is exact for the stated operand
 * ranges and checked against mg_quant.c (tests/test_fast_kernels.py).
 */
#ifndef MG_FAST_H
#define MG_FAST_H

#include <stdint.h>

#include "mg_delay.h"
#include "mg_kernels.h"
#include "mg_mingru.h"
#include "mg_ops16.h"
#include "mg_quant.h"
#include "mg_rom.h"
#include "mg_state16.h"

/* default: the fast path on every core (plain C where there is no DSP extension), except
 * where MG_ROM puts the constants in flash (AVR: the fast tables are read from RAM) */
#ifndef MG_FAST
#if !MG_SINGLE_ROUNDING && !MG_ROM_IN_FLASH
#define MG_FAST 1
#else
#define MG_FAST 0
#endif
#endif

#if MG_FAST && MG_ROM_IN_FLASH
#error "the fast path reads its tables from RAM: build with MG_FAST=0 where MG_ROM is flash (AVR)"
#endif

#if MG_FAST && MG_SINGLE_ROUNDING
#error "the fast path implements TFLM's default (double) rounding only: build with MG_FAST=0"
#endif

#if defined(__ARM_FEATURE_DSP) && !defined(MG_DSP_EMULATE)
#define MG_DSP_NATIVE 1
#include <arm_acle.h>
#else
#define MG_DSP_NATIVE 0
#endif

/* 1 where the core has no 32x32 -> 64-bit multiply instruction (Armv6-M / Armv8-M Baseline,
 * Xtensa lx106: GCC calls __aeabi_lmul / __muldi3, ~50 instructions): the bounded
 * requantization products are composed from 16-bit halves there (mg_fq_srdhm_b). Xtensa:
 * the call0-ABI cores (the ESP8266's lx106); the windowed-ABI ESP32 cores have MULSH (an
 * lx106-like core with it can define MG_MUL32_HIGH). */
#ifndef MG_MUL64_CALL       /* (tests/test_fast_kernels.py also forces it on the host) */
#if defined(__ARM_ARCH_6M__) || defined(__ARM_ARCH_8M_BASE__) || \
    (defined(__XTENSA__) && defined(__XTENSA_CALL0_ABI__) && !defined(MG_MUL32_HIGH))
#define MG_MUL64_CALL 1
#else
#define MG_MUL64_CALL 0
#endif
#endif

/* mg_ffc_dot in Thumb-2 assembly (mg_fast.c) where the DSP instructions are native and the
 * compiler takes GNU inline assembly; -DMG_FFC_DOT_C keeps the C loop (same results). */
#if MG_DSP_NATIVE && defined(__GNUC__) && defined(__thumb2__) && !defined(MG_FFC_DOT_C)
#define MG_FFC_DOT_ASM 1
#else
#define MG_FFC_DOT_ASM 0
#endif

/* The 16x8 dots of the int16 minGRU input from int16 copies of the weights, stored
 * pre-extended by the generator (no SXTB16 unpacking: 11 instructions per 16 MACs instead of
 * 22, for 2 more bytes of flash per weight): on the cores with the Thumb-2 dot. Elsewhere (no
 * DSP, where the int8 weights are read directly, and the AVR/MG_ROM builds without MG_FAST)
 * the generated package holds no copies. -DMG_FDOT16_W16=0 keeps the int8 dots on a DSP core. */
#ifndef MG_FDOT16_W16
#define MG_FDOT16_W16 MG_FFC_DOT_ASM
#endif
#if MG_FDOT16_W16 && !MG_FFC_DOT_ASM
#error "MG_FDOT16_W16 needs the Thumb-2 dot (MG_FFC_DOT_ASM)"
#endif

#define MG_FAST_INLINE MG_ALWAYS_INLINE     /* mg_elem.h */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- DSP primitives: ACLE intrinsics or their plain-C definitions ----------------------- */

#if MG_DSP_NATIVE
#define mg_sxtb16(x) ((uint32_t)__sxtb16(x))
#define mg_uxtb16(x) ((uint32_t)__uxtb16(x))
#define mg_smlad(a, b, acc) ((int32_t)__smlad((a), (b), (acc)))
#define mg_ssub16(a, b) ((uint32_t)__ssub16((a), (b)))
#else
static inline uint32_t mg_sxtb16(uint32_t x)
{
    return (((uint32_t)(int32_t)(int8_t)(x & 0xFFu)) & 0xFFFFu) |
           ((uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xFFu) << 16);
}
static inline uint32_t mg_uxtb16(uint32_t x)
{
    return x & 0x00FF00FFu;
}
static inline int32_t mg_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t p0 = (int32_t)(int16_t)(a & 0xFFFFu) * (int32_t)(int16_t)(b & 0xFFFFu);
    const int32_t p1 = (int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)p0 + (uint32_t)p1);   /* wraps like SMLAD */
}
static inline uint32_t mg_ssub16(uint32_t a, uint32_t b)
{
    const uint32_t lo = (uint32_t)((int32_t)(int16_t)(a & 0xFFFFu) -
                                   (int32_t)(int16_t)(b & 0xFFFFu)) & 0xFFFFu;
    const uint32_t hi = (uint32_t)((int32_t)(int16_t)(a >> 16) - (int32_t)(int16_t)(b >> 16));
    return lo | (hi << 16);
}
#endif

/* ---- exact fixed point (identical to mg_quant.c for the stated argument ranges) -------- */

/* mg_srdhm(a, b) for b >= 0 (quantized multipliers): floor((a b + 2^30) / 2^31). The
 * reference's "nudge, then divide toward zero" is this floor for both signs. */
static inline int32_t mg_fq_srdhm(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/* mg_fq_srdhm(a, b) when -2^30 <= a < 2^30 (2a fits 32 bits): floor((2a b + 2^31) / 2^32),
 * the high word of one 32x32 multiply-accumulate (no shift/or of a 64-bit result). */
static inline int32_t mg_fq_srdhm_b(int32_t a, int32_t b)
{
#if MG_MUL64_CALL
    /* 32-bit products of 16-bit halves (no libgcc call): a = ah 2^16 + al with ah in
     * [-2^14, 2^14), al in [0, 2^16); b = bh 2^16 + bl with bh in [0, 2^15). Then
     * a b + 2^30 = 2^31 (2 ah bh) + 2^16 (s1 + s2) + (al bl mod 2^16), s1 = ah bl (|s1| <
     * 2^30), s2 = al bh + (al bl >> 16) + 2^14 (< 2^31), and the result is
     * 2 ah bh + floor((s1 + s2) / 2^15), summed without overflow as below. */
    const int32_t ah = a >> 16, bh = b >> 16;
    const uint32_t al = (uint32_t)a & 0xFFFFu, bl = (uint32_t)b & 0xFFFFu;
    const int32_t s1 = ah * (int32_t)bl;
    const uint32_t s2 = al * (uint32_t)bh + ((al * bl) >> 16) + 0x4000u;
    return 2 * ah * bh + (s1 >> 15) + (int32_t)((((uint32_t)s1 & 0x7FFFu) + s2) >> 15);
#else
    /* high word + the carry of adding 2^31 to the low word: SMULL and one ADD */
    const int64_t p = (int64_t)(a * 2) * (int64_t)b;
    return (int32_t)(p >> 32) + (int32_t)((uint32_t)p >> 31);
#endif
}

/* mg_srdhm((k << ls), b), b >= 0, with 32-bit multiplies only: exact when |k| < 2^(31-ls)
 * / 2 and 1 <= ls <= 30 (ADD/SUB inputs: |k| <= 255, ls = 20). */
static inline int32_t mg_fq_srdhm_pot(int32_t k, int ls, int32_t b)
{
    const int s = 31 - ls;
    const int32_t hi = b >> s;
    const int32_t lo = b & (((int32_t)1 << s) - 1);
    return k * hi + ((k * lo + ((int32_t)1 << (s - 1))) >> s);
}

/* mg_rdbpot(x, e), 0 <= e <= 31, any x. */
static inline int32_t mg_fq_rdbpot(int32_t x, int e)
{
    uint32_t mask, t;
    if (e == 0) {
        return x;
    }
    mask = ((uint32_t)1 << e) - 1u;
    t = ((uint32_t)x & mask) + (mask >> 1) + 1u - ((uint32_t)x >> 31);
    return (x >> e) + (int32_t)(t >> e);
}

/* mg_rdbpot(x, e) when |x| < 2^30 and 0 <= e <= 30. */
static inline int32_t mg_fq_rdbpot_b(int32_t x, int e)
{
    return e ? (x + ((int32_t)1 << (e - 1)) + (x >> 31)) >> e : x;
}

/* mg_rdbpot(x, e) + zp in one rounding: the zero point times 2^e joins the rounding
 * constant (adding a multiple of 2^e commutes with the floor). |x| < 2^29, |zp| <= 256. */
static inline int32_t mg_fq_rdbpot_zp(int32_t x, int e, int32_t zp)
{
    if (e == 0) {
        return x + zp;
    }
    if (e <= 20) {
        return (x + ((int32_t)1 << (e - 1)) + zp * ((int32_t)1 << e) + (x >> 31)) >> e;
    }
    return ((x + ((int32_t)1 << (e - 1)) + (x >> 31)) >> e) + zp;
}

/* mg_fq_srdhm_b(a, m) + c, -2^30 <= a < 2^30, m >= 0: with the DSP extension one SMMLAR
 * (c + the high word of 2a m + 2^31, the rounding of mg_fq_srdhm_b) instead of SMULL and two
 * ADDs; the sum must fit int32 (the callers' bounds). */
MG_FAST_INLINE int32_t mg_fq_srdhm_add(int32_t a, int32_t m, int32_t c)
{
#if MG_DSP_NATIVE && defined(__GNUC__)
    int32_t r;
    if (__builtin_constant_p(m) && m == ((int32_t)1 << 30)) {
        return ((a + 1) >> 1) + c;      /* floor((2a 2^30 + 2^31) / 2^32): shifts fold */
    }
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a * 2), "r"(m), "r"(c));
    return r;
#else
    return mg_fq_srdhm_b(a, m) + c;
#endif
}

/* mg_fq_rdbpot_zp(mg_fq_srdhm_b(a, m), e, zp) for -2^30 <= a < 2^30, m >= 0, 0 <= e <= 30,
 * (|zp| + 1) 2^e < 2^30: the rounding constant c = 2^(e-1) + zp 2^e joins the multiply
 * (mg_fq_srdhm_add) and the sign of a stands for the sign of y = srdhm(a, m). They differ
 * only where y = 0 and a < 0, and there (c - 1) >> e == c >> e because c mod 2^e = 2^(e-1)
 * is not 0. */
MG_FAST_INLINE int32_t mg_fq_mul_round(int32_t a, int32_t m, int e, int32_t zp)
{
    if (e == 0) {
        return mg_fq_srdhm_add(a, m, zp);
    }
    return (mg_fq_srdhm_add(a, m, ((int32_t)1 << (e - 1)) + zp * ((int32_t)1 << e)) +
            (a >> 31)) >> e;
}

/* mg_mbqm(x, m, shift) when |x| < 2^30 (|srdhm| <= |x|). */
static inline int32_t mg_fq_mbqm_b(int32_t x, int32_t m, int shift)
{
#if MG_SINGLE_ROUNDING
    return mg_mbqm(x, m, shift);
#else
    if (shift > 0) {
        return mg_fq_srdhm((int32_t)((uint32_t)x << shift), m);
    }
    return mg_fq_mul_round(x, m, -shift, 0);
#endif
}

/* mg_fq_srdhm_b(a, m) for |a| < 2^15, m >= 0, with two 32-bit products (for the cores
 * without a 64-bit multiply): a m + 2^30 = 2^16 a mh + a ml + 2^30 (mh = m >> 16 < 2^15,
 * ml = m & 0xFFFF; |a mh| < 2^30, |a ml| < 2^31), so the result is
 * (a mh + floor(a ml / 2^16) + 2^14) >> 15. */
static inline int32_t mg_fq_srdhm_small(int32_t a, int32_t m)
{
    return (a * (m >> 16) + ((a * (int32_t)(m & 0xFFFF)) >> 16) + ((int32_t)1 << 14)) >> 15;
}

/* mg_mbqm(x, m, shift) for |x| < 2^xbits, xbits <= 30 (a compile-time constant at the call
 * sites, like m and shift): one SMULL where the shifted value stays below 2^30 in magnitude
 * (mg_fq_srdhm_b), the 3-instruction rounding where the right shift is <= 30; without a
 * 64-bit multiply, two 32-bit products where the shifted value stays below 2^15. */
MG_FAST_INLINE int32_t mg_fq_mbqm_w(int32_t x, int32_t m, int shift, int xbits)
{
#if MG_SINGLE_ROUNDING
    (void)xbits;
    return mg_mbqm(x, m, shift);
#else
#if MG_MUL64_CALL
    if (shift <= 0 && xbits <= 15 && -shift <= 30) {
        return mg_fq_rdbpot_b(mg_fq_srdhm_small(x, m), -shift);
    }
    if (shift > 0 && xbits + shift <= 15) {
        return mg_fq_srdhm_small(x * ((int32_t)1 << shift), m);
    }
#endif
    if (shift > 0) {
        if (xbits + shift <= 30) {
            return mg_fq_srdhm_b(x * ((int32_t)1 << shift), m);
        }
        return mg_fq_srdhm((int32_t)((uint32_t)x << shift), m);
    }
    if (-shift <= 30) {
        return mg_fq_mul_round(x, m, -shift, 0);
    }
    return mg_fq_rdbpot(mg_fq_srdhm_b(x, m), -shift);
#endif
}

static inline int32_t mg_fq_clamp(int32_t v, int32_t lo, int32_t hi)
{
#if MG_DSP_NATIVE
    if (lo == -128 && hi == 127) {      /* folded at compile time where lo, hi are known */
        return __ssat(v, 8);
    }
    if (lo == -32768 && hi == 32767) {
        return __ssat(v, 16);
    }
#endif
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Unrolls the next loop where the compiler supports it (its trip count is a folded constant
 * at the call sites: the number of delay taps). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define MG_UNROLL _Pragma("GCC unroll 8")
#else
#define MG_UNROLL
#endif

/* 4 bytes as one word, bits 0-7 = x[0] (any alignment). */
MG_FAST_INLINE uint32_t mg_fload4(const int8_t *x)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t w;
    __builtin_memcpy(&w, x, 4);
    return w;
#else
    return (uint32_t)(uint8_t)x[0] | ((uint32_t)(uint8_t)x[1] << 8) |
           ((uint32_t)(uint8_t)x[2] << 16) | ((uint32_t)(uint8_t)x[3] << 24);
#endif
}

/* ---- FULLY_CONNECTED on re-laid weights ------------------------------------------------- */

typedef struct {
    int32_t bias;    /* bias + folded input zero point and odd-input offset (see above) */
    int32_t mult;    /* quantized multiplier */
    int32_t shift;   /* right_shifts: e = -(TFLite shift) >= 1; else the TFLite shift */
    int32_t rnd;     /* right_shifts: 2^(e - 1), the rounding constant; else 0 */
} mg_fq_chan_t;

typedef struct {
    int32_t depth;            /* input elements */
    int32_t blocks;           /* ceil(depth / 4) */
    int32_t n_out;            /* output channels written */
    const uint32_t *w;        /* ceil(n_out / 4) * blocks * 4 words, layout above */
    const mg_fq_chan_t *ch;   /* [n_out] */
    int32_t output_offset, act_min, act_max;
    int32_t right_shifts;     /* 1: every shift <= -1 (the 3-instruction rounding applies);
                               * 2: and the output zero point is folded into ch->rnd */
} mg_ffc_params_t;

/* x int8 [depth] -> xq [2 * blocks] words (R, P per block; the tail block padded with 0). */
void mg_ffc_expand(const int8_t *x, int32_t depth, uint32_t *xq);

/* d[c] = sum_k b_kc x'_k for every channel of `groups` weight groups (no bias). */
void mg_ffc_dot(const uint32_t *xq, const uint32_t *w, int32_t blocks, int32_t groups,
                int32_t *d);

/* The kernels below are `static inline` on purpose: the generated package calls them with
 * pointers to its `static const` parameter structs, so the compiler folds every scalar
 * parameter (offsets, multipliers, shifts, clamps, sizes) into the code at each call site. */

/* Requantized output of channel c from its dot d (|d + bias| < 2^30, generator-checked),
 * clamped to the activation range (int8, or int16 for a 16x8 FC). */
MG_FAST_INLINE int32_t mg_ffc_out32(const mg_ffc_params_t *p, int32_t d, int32_t c)
{
    const mg_fq_chan_t *ch = &p->ch[c];
    const int32_t x = d + ch->bias;
    int32_t y;
    /* the rounding of mg_fq_mul_round: rnd (2^(e-1), + zero point * 2^e in mode 2) with the
     * multiply, the sign of x for the sign of srdhm(x, mult) */
    if (p->right_shifts == 2) {
        y = mg_fq_srdhm_add(x, ch->mult, ch->rnd);
        return mg_fq_clamp((y + (x >> 31)) >> ch->shift, p->act_min, p->act_max);
    }
    if (p->right_shifts) {
        y = (mg_fq_srdhm_add(x, ch->mult, ch->rnd) + (x >> 31)) >> ch->shift;
    } else {
        y = mg_fq_mbqm_b(x, ch->mult, (int)ch->shift);
    }
    return mg_fq_clamp(y + p->output_offset, p->act_min, p->act_max);
}

MG_FAST_INLINE int8_t mg_ffc_out1(const mg_ffc_params_t *p, int32_t d, int32_t c)
{
    return (int8_t)mg_ffc_out32(p, d, c);
}

/* out [n_out] = FC(x [depth]); xq: scratch of 2 * blocks words, acc: of n_out rounded up
 * to 4 words. */
MG_FAST_INLINE void mg_ffc_s8(const mg_ffc_params_t *p, const int8_t *x, uint32_t *xq,
                              int32_t *acc, int8_t *out)
{
    int32_t c;
    if (p->depth == 1) {        /* one input (an encoder): the halfword of word c is w[c] */
        const int32_t xv = x[0];
        for (c = 0; c < p->n_out; ++c) {
            out[c] = mg_ffc_out1(p, (int32_t)(int16_t)(p->w[c] & 0xFFFFu) * xv, c);
        }
        return;
    }
    mg_ffc_expand(x, p->depth, xq);
    mg_ffc_dot(xq, p->w, p->blocks, (p->n_out + 3) >> 2, acc);
    for (c = 0; c < p->n_out; ++c) {
        out[c] = mg_ffc_out1(p, acc[c], c);
    }
}

/* ---- DEPTHWISE_CONV_2D 1x1 on one frame (the post-norm w s + t) ------------------------ */

/* out [n_out] = requant(w[c] x[c] + bias'[c]) per channel: a 1x1 depthwise conv with one
 * input pixel and depth multiplier 1 (bias' = bias + input offset * w[c], in q->ch). */
MG_FAST_INLINE void mg_fscale_s8(const mg_ffc_params_t *q, const int8_t *w, const int8_t *x,
                                 int8_t *out)
{
    int32_t c;
    for (c = 0; c < q->n_out; ++c) {
        out[c] = mg_ffc_out1(q, (int32_t)w[c] * (int32_t)x[c], c);
    }
}

/* ---- elementwise --------------------------------------------------------------------- */

/* Up to 3 elementwise ops applied to each FC output in the same pass (the residual ADD and a
 * per-channel MUL/ADD after an MLP): kind[k] 0 none, 1 ADD, 2 SUB, 3 MUL; the other operand
 * of op k is other[k][c]; swap[k] = 1 when the FC value is the op's second input. */
typedef struct {
    int32_t kind[3];
    const mg_add_params_t *add[3];
    const mg_mul_params_t *mul[3];
    int32_t swap[3];
} mg_epi_t;

/* One ADD / SUB input rescaled: mg_rdbpot(mg_srdhm((x + offset) << ls, m), -shift) with
 * 32-bit products only (exact for |x + offset| <= 256, 1 <= ls <= 20, shift <= 0). */
MG_FAST_INLINE int32_t mg_fadd_in(int32_t x, int32_t offset, int ls, int32_t m, int shift)
{
#if MG_DSP_NATIVE && defined(__GNUC__)
    /* |(x + offset) << ls| <= 2^28: one SMMLAR (mg_fq_mul_round) */
    return mg_fq_mul_round((x + offset) * ((int32_t)1 << ls), m, -shift, 0);
#else
    return mg_fq_rdbpot_b(mg_fq_srdhm_pot(x + offset, ls, m), -shift);
#endif
}
MG_FAST_INLINE int8_t mg_fadd_out(const mg_add_params_t *p, int32_t raw)
{
    if (-p->output_shift <= 20) {
        return (int8_t)mg_fq_clamp(mg_fq_mul_round(raw, p->output_multiplier,
                                                   -(int)p->output_shift, p->output_offset),
                                   p->act_min, p->act_max);
    }
    return (int8_t)mg_fq_clamp(mg_fq_rdbpot_zp(mg_fq_srdhm_b(raw, p->output_multiplier),
                                               -(int)p->output_shift, p->output_offset),
                               p->act_min, p->act_max);
}
MG_FAST_INLINE int8_t mg_fadd1(const mg_add_params_t *p, int8_t a, int8_t b)
{
    const int ls = (int)p->left_shift;
    return mg_fadd_out(p, mg_fadd_in(a, p->input1_offset, ls, p->input1_multiplier,
                                     (int)p->input1_shift)
                          + mg_fadd_in(b, p->input2_offset, ls, p->input2_multiplier,
                                       (int)p->input2_shift));
}

/* The residual ADD of a fused kernel in the graph's operand order: ADD(x, y), or ADD(y, x)
 * where swap is set (x: the kernel's input, y: its output). */
MG_FAST_INLINE int8_t mg_fadd1_res(const mg_add_params_t *p, int32_t swap, int8_t x, int8_t y)
{
    return swap ? mg_fadd1(p, y, x) : mg_fadd1(p, x, y);
}

MG_FAST_INLINE int8_t mg_fsub1(const mg_add_params_t *p, int8_t a, int8_t b)
{
    const int ls = (int)p->left_shift;
    return mg_fadd_out(p, mg_fadd_in(a, p->input1_offset, ls, p->input1_multiplier,
                                     (int)p->input1_shift)
                          - mg_fadd_in(b, p->input2_offset, ls, p->input2_multiplier,
                                       (int)p->input2_shift));
}
MG_FAST_INLINE int8_t mg_fmul1(const mg_mul_params_t *p, int8_t a, int8_t b)
{
    const int32_t v = ((int32_t)a + p->input1_offset) * ((int32_t)b + p->input2_offset);
    if (p->output_shift <= 0 && -p->output_shift <= 20) {     /* |v| <= 2^16 */
        return (int8_t)mg_fq_clamp(mg_fq_mul_round(v, p->output_multiplier,
                                                   -(int)p->output_shift, p->output_offset),
                                   p->act_min, p->act_max);
    }
    if (p->output_shift <= 0) {
        return (int8_t)mg_fq_clamp(mg_fq_rdbpot_zp(mg_fq_srdhm_b(v, p->output_multiplier),
                                                   -(int)p->output_shift, p->output_offset),
                                   p->act_min, p->act_max);
    }
    return (int8_t)mg_fq_clamp(mg_fq_mbqm_b(v, p->output_multiplier, (int)p->output_shift)
                               + p->output_offset, p->act_min, p->act_max);
}

/* out[i] = lut[in[i] + 128] for n elements (any int8 -> int8 function of one input). */
MG_FAST_INLINE void mg_lut_s8(const int8_t *lut, int32_t n, const int8_t *in, int8_t *out)
{
    const int8_t *mid = lut + 128;
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mid[in[i]];
    }
}

/* ADD / SUB / MUL without broadcasting (n elements), TFLM arithmetic; ADD/SUB need int8
 * parameters with 1 <= left_shift <= 20 (the generator checks, mg_fast_add_ok). */
MG_FAST_INLINE void mg_fadd_s8(const mg_add_params_t *p, int32_t n, const int8_t *a,
                              const int8_t *b, int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mg_fadd1(p, a[i], b[i]);
    }
}
MG_FAST_INLINE void mg_fsub_s8(const mg_add_params_t *p, int32_t n, const int8_t *a,
                              const int8_t *b, int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mg_fsub1(p, a[i], b[i]);
    }
}
MG_FAST_INLINE void mg_fmul_s8(const mg_mul_params_t *p, int32_t n, const int8_t *a,
                              const int8_t *b, int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mg_fmul1(p, a[i], b[i]);
    }
}

/* One epilogue op on value v of channel c. */
MG_FAST_INLINE int8_t mg_epi1(const mg_epi_t *e, int k, int8_t v, int8_t o)
{
    const int8_t a = e->swap[k] ? o : v;
    const int8_t b = e->swap[k] ? v : o;
    if (e->kind[k] == 1) {
        return mg_fadd1(e->add[k], a, b);
    }
    if (e->kind[k] == 2) {
        return mg_fsub1(e->add[k], a, b);
    }
    return mg_fmul1(e->mul[k], a, b);
}

/* mg_ffc_s8 followed by the epilogue ops of e (other operands o0..o2, NULL where unused);
 * only the last op's result is written (to out). */
MG_FAST_INLINE void mg_ffc_epi_s8(const mg_ffc_params_t *p, const int8_t *x, uint32_t *xq,
                                  int32_t *acc, int8_t *out, const mg_epi_t *e,
                                  const int8_t *o0, const int8_t *o1, const int8_t *o2)
{
    int32_t c;
    mg_ffc_expand(x, p->depth, xq);
    mg_ffc_dot(xq, p->w, p->blocks, (p->n_out + 3) >> 2, acc);
    for (c = 0; c < p->n_out; ++c) {
        int8_t v = mg_ffc_out1(p, acc[c], c);
        if (e->kind[0]) {
            v = mg_epi1(e, 0, v, o0[c]);
        }
        if (e->kind[1]) {
            v = mg_epi1(e, 1, v, o1[c]);
        }
        if (e->kind[2]) {
            v = mg_epi1(e, 2, v, o2[c]);
        }
        out[c] = v;
    }
}

/* ---- fused layer kernels --------------------------------------------------------------- */

/* Delay convolution on the trimmed rings (mg_delay.h): taps re-laid channel-major, the input
 * zero point folded into the bias (q->ch[c].bias = bias[c] + input_offset * sum_e filter),
 * requantized like an FC output (q: w unused). With `add` set, the residual
 * ADD(frame, conv) that follows in the graph is computed in the same pass and only its
 * result is written (to add_out; `out` is not written). */
typedef struct {
    int32_t channels;               /* H */
    int32_t taps;                   /* N */
    const uint16_t *ring_len;       /* [H] R_c */
    const uint32_t *ring_off;       /* [H] */
    const uint16_t *delay;          /* [H * N] channel-major: delay[c * N + e] */
    const int8_t *filter;           /* [H * N] channel-major */
    const mg_ffc_params_t *q;       /* per-channel folded bias and requantization */
    const mg_add_params_t *add;     /* residual ADD, or NULL */
    int32_t add_swap;               /* 0: ADD(frame, conv), 1: ADD(conv, frame) */
} mg_delay_fast_t;

/* The dot product of channel c's N taps at step t on its trimmed ring (mg_delay.h: len =
 * ring_len[c] slots from ring + ring_off[c], none where len is 0), then the channel's frame
 * value cur written to slot t mod len: sum_e fl[e] * tap_e with tap_e the int8 frame of delay dl[e] (0: cur),
 * taken as is (mapped 0) or through the 256-entry int16 table lut (mapped 1, lut indexed by
 * the int8 value). Both fast delay kernels inline it with `mapped` a constant: no test in
 * the loop, the same code as a kernel written out for each (MG_FAST_INLINE). */
MG_FAST_INLINE int32_t mg_delay_fast_dot(int8_t *ring, const uint16_t *ring_len,
                                         const uint32_t *ring_off, int32_t c, uint32_t t,
                                         const uint16_t *dl, const int8_t *fl, int32_t N,
                                         int8_t cur, int mapped, const int16_t *lut)
{
    const uint32_t len = ring_len[c];
    int32_t acc = 0;
    int32_t e;
    if (len) {
        int8_t *slots = ring + ring_off[c];
        const uint32_t pos = t % len;
        MG_UNROLL
        for (e = 0; e < N; ++e) {
            const uint32_t d = dl[e];
            const int32_t v = d == 0u ? (int32_t)cur
                                      : (int32_t)slots[pos >= d ? pos - d : pos + len - d];
            acc += (int32_t)fl[e] * (mapped ? (int32_t)lut[v] : v);
        }
        slots[pos] = cur;
    } else {
        const int32_t v = mapped ? (int32_t)lut[cur] : (int32_t)cur;
        for (e = 0; e < N; ++e) {
            acc += (int32_t)fl[e] * v;
        }
    }
    return acc;
}

MG_FAST_INLINE void mg_delay_fast_s8(const mg_delay_fast_t *p, int8_t *ring, uint32_t t,
                                     const int8_t *frame, int8_t *out, int8_t *add_out)
{
    const uint16_t *dl = p->delay;
    const int8_t *fl = p->filter;
    int32_t c;
    for (c = 0; c < p->channels; ++c, dl += p->taps, fl += p->taps) {
        const int8_t cur = frame[c];
        const int32_t acc = mg_delay_fast_dot(ring, p->ring_len, p->ring_off, c, t, dl, fl,
                                              p->taps, cur, 0, (const int16_t *)0);
        const int8_t y = mg_ffc_out1(p->q, acc, c);
        if (p->add) {
            add_out[c] = mg_fadd1_res(p->add, p->add_swap, cur, y);
        } else {
            out[c] = y;
        }
    }
}

/* minGRU step (mg_mingru.h) on re-laid weights with 256-entry tables. */
typedef struct {
    int32_t channels;              /* H */
    const mg_ffc_params_t *gate;   /* z_pre */
    const mg_ffc_params_t *cand;   /* p (no activation) */
    const int8_t *sig_z;           /* [256] z = LOGISTIC(z_pre) */
    const int8_t *sig_min_p;       /* [256] q = LOGISTIC(MINIMUM(p, min_const)) (stride 0) */
    const int8_t *min_const;       /* per-channel MINIMUM constant, or NULL (in sig_min_p) */
    const int8_t *sig_p;           /* [256] LOGISTIC alone (with min_const != NULL) */
    const mg_ffc_params_t *relu_fc;  /* r_pre = FC(u), or NULL: r_pre = p */
    int32_t relu_fc_shares_dot;    /* relu_fc reads cand's dot (its own bias/quantization) */
    const int8_t *relu;            /* [256] RELU op table, or NULL */
    const mg_add_params_t *add_g;  /* g = ADD(r, q) */
    const mg_add_params_t *sub;    /* d = SUB(g, h) */
    const mg_mul_params_t *mul;    /* m = MUL(z, d) */
    const mg_add_params_t *add_h;  /* h_new = ADD(h, m) */
    /* g as two tables of one input (convert/codegen_fast.g_split_tables), or NULL:
     * g = g_neg[p] where cand's dot <= g_split[c], else g_pos[r] */
    const int32_t *g_split;        /* [H] */
    const int8_t *g_neg;           /* [256] */
    const int8_t *g_pos;           /* [256] */
    const mg_add_params_t *add_v;  /* residual v = ADD(u, h_new) in the same pass, or NULL */
    int32_t add_v_swap;            /* 0: ADD(u, h_new), 1: ADD(h_new, u) */
} mg_mingru_fast_t;

/* Candidate g of channel c from the dot products (dz, dp, dr: acc rows); *z_pre receives
 * the gate's pre-activation (the caller applies its table: sig_z, or mg_state16's z16_lut). */
MG_FAST_INLINE int8_t mg_mingru_fast_g1(const mg_mingru_fast_t *p, int32_t c,
                                        const int32_t *dz, const int32_t *dp,
                                        const int32_t *dr, int separate_r, int8_t *z_pre)
{
    const mg_ffc_params_t *rfc = p->relu_fc;
    const int8_t *sig_q = (p->min_const ? p->sig_p : p->sig_min_p) + 128;
    int8_t r, q, pv;
    *z_pre = mg_ffc_out1(p->gate, dz[c], c);
    if (p->g_split) {
        if (dp[c] <= p->g_split[c]) {
            return (p->g_neg + 128)[mg_ffc_out1(p->cand, dp[c], c)];
        }
        return (p->g_pos + 128)[mg_ffc_out1(rfc, dp[c], c)];
    }
    pv = mg_ffc_out1(p->cand, dp[c], c);
    if (p->min_const) {
        const int8_t mn = p->min_const[c];
        q = sig_q[pv < mn ? pv : mn];
    } else {
        q = sig_q[pv];
    }
    if (rfc == (const mg_ffc_params_t *)0) {
        r = pv;
    } else {
        r = mg_ffc_out1(rfc, separate_r ? dr[c] : dp[c], c);
    }
    if (p->relu) {
        r = (p->relu + 128)[r];
    }
    return mg_fadd1(p->add_g, r, q);
}

/* The three dot products of a step into acc (gate, cand, and relu_fc when it has its own). */
MG_FAST_INLINE int mg_mingru_fast_dots(const mg_mingru_fast_t *p, const int8_t *u,
                                       uint32_t *xq, int32_t *acc)
{
    const int32_t blocks = p->gate->blocks;
    const int32_t groups = (p->channels + 3) >> 2;
    const int separate_r = p->relu_fc && !p->relu_fc_shares_dot;
    mg_ffc_expand(u, p->gate->depth, xq);
    mg_ffc_dot(xq, p->gate->w, blocks, groups, acc);
    mg_ffc_dot(xq, p->cand->w, blocks, groups, acc + 4 * groups);
    if (separate_r) {
        mg_ffc_dot(xq, p->relu_fc->w, blocks, groups, acc + 8 * groups);
    }
    return separate_r;
}

/* ---- the int16 state path (mg_state16.h): the same z and g, then the int16 tail ------- */

/* int16 ADD/SUB input: mg_rdbpot(mg_srdhm(x << ls, m), -shift) as mg_elem.h mg_add_scaled1,
 * |x| <= 2^15. With ls <= 15 the shifted value lies in [-2^30, 2^30) (2x fits 32 bits: one
 * SMULL, mg_fq_srdhm_b) and |srdhm| < 2^30 (the 3-instruction rounding for shift >= -30). */
MG_FAST_INLINE int32_t mg_fadd16_in(int32_t x, int ls, int32_t m, int shift)
{
#if MG_MUL64_CALL
    if (ls == 15 && -shift <= 30) {
        /* without a 64-bit multiply: mg_fq_srdhm_pot's two 32-bit products, exact for
         * |x| <= 2^15 at ls = 15 (|x (m & 0xFFFF)| + 2^15 < 2^31) */
        return mg_fq_rdbpot_b(mg_fq_srdhm_pot(x, 15, m), -shift);
    }
#endif
    if (ls <= 15) {
        if (-shift <= 30) {
            return mg_fq_mul_round(x * ((int32_t)1 << ls), m, -shift, 0);
        }
        return mg_fq_rdbpot(mg_fq_srdhm_b(x * ((int32_t)1 << ls), m), -shift);
    }
    return mg_fq_rdbpot(mg_fq_srdhm(x * ((int32_t)1 << ls), m), -shift);
}

/* m 2^shift <= 1/2 for a quantized multiplier m < 2^31 */
#define MG_FQ_HALF(m, shift) ((shift) <= -1 || ((shift) == 0 && (m) <= ((int32_t)1 << 30)))

/* The int16 ADD/SUB output from raw = the sum (difference) of the two rescaled inputs. Where
 * both input rescalings are at most 1/2 (shift <= -1, or shift 0 and multiplier <= 2^30:
 * TFLM's int16 ADD divides by twice the larger input scale) and ls <= 15, each |input| <= 2^29
 * and raw lies in [-2^30, 2^30): one SMULL (mg_fq_srdhm_b) and the 3-instruction rounding. */
MG_FAST_INLINE int16_t mg_fadd16_out(const mg_add_params_t *p, int32_t raw)
{
    if (p->left_shift <= 15 && MG_FQ_HALF(p->input1_multiplier, p->input1_shift) &&
        MG_FQ_HALF(p->input2_multiplier, p->input2_shift) && p->output_shift >= -30) {
        return (int16_t)mg_fq_clamp(mg_fq_mul_round(raw, p->output_multiplier,
                                                    -(int)p->output_shift, 0)
                                    + p->output_offset,
                                    p->act_min, p->act_max);
    }
    return (int16_t)mg_fq_clamp(mg_fq_rdbpot(mg_fq_srdhm(raw, p->output_multiplier),
                                             -(int)p->output_shift) + p->output_offset,
                                p->act_min, p->act_max);
}

/* QUANTIZE of one int8 or int16 value x (|x - input zero point| < 2^17). */
MG_FAST_INLINE int32_t mg_frequant1(const mg_requant_params_t *p, int32_t x)
{
    return mg_fq_clamp(mg_fq_mbqm_w(x - p->input_offset, p->multiplier, (int)p->shift, 17)
                       + p->output_offset, p->act_min, p->act_max);
}

/* mg_frequant1 of an int8 value (|x - input zero point| <= 255 < 2^9). */
MG_FAST_INLINE int32_t mg_frequant8(const mg_requant_params_t *p, int8_t x)
{
    return mg_fq_clamp(mg_fq_mbqm_w((int32_t)x - p->input_offset, p->multiplier,
                                    (int)p->shift, 9)
                       + p->output_offset, p->act_min, p->act_max);
}

/* The tail for one channel on the int16 gate z16 (from s->z16_lut): returns h16', writes the
 * int8 h' to *h8. */
MG_FAST_INLINE int16_t mg_fstate16_update1(const mg_state16_params_t *s, int32_t z16, int8_t g,
                                           int16_t h, int8_t *h8)
{
    const mg_add_params_t *sp = s->sub, *ap = s->add_h;
    const int ls = (int)sp->left_shift;
    const int32_t g16 = mg_frequant8(s->g16, g);
    const int32_t d = mg_fadd16_out(sp, mg_fadd16_in(g16, ls, sp->input1_multiplier,
                                                     (int)sp->input1_shift)
                                        - mg_fadd16_in(h, ls, sp->input2_multiplier,
                                                       (int)sp->input2_shift));
    /* |z16 d| < 2^30: z16 in [0, 2^15), d int16 */
    const int32_t m = mg_fq_clamp(mg_fq_mbqm_w(z16 * d, s->mul->output_multiplier,
                                               (int)s->mul->output_shift, 30),
                                  s->mul->act_min, s->mul->act_max);
    const int16_t hn = mg_fadd16_out(ap, mg_fadd16_in(h, (int)ap->left_shift,
                                                      ap->input1_multiplier,
                                                      (int)ap->input1_shift)
                                         + mg_fadd16_in(m, (int)ap->left_shift,
                                                        ap->input2_multiplier,
                                                        (int)ap->input2_shift));
    *h8 = (int8_t)mg_frequant1(s->h8, hn);
    return hn;
}

/* One minGRU step of either state width: the dots, then per channel g, z and the state
 * update, int8 (s NULL: h [H] updated in place) or int16 (s: h16 [H] updated in place, h8
 * [H] = int8 h_new; the gate z16 from s->z16_lut indexed by z_pre, p->sig_z unused), and
 * v [H] = the residual ADD(u, h_new8) where add_v is set. xq: scratch of 2 * gate->blocks
 * words, acc: of 3 * (H rounded up to 4) words. Inlined with s a constant (NULL or a
 * package's params): one kernel body, no test of s in the loop. */
MG_FAST_INLINE void mg_mingru_fast_step(const mg_mingru_fast_t *p, const mg_state16_params_t *s,
                                        const int8_t *u, int8_t *h, int16_t *h16, int8_t *h8,
                                        uint32_t *xq, int32_t *acc, int8_t *v)
{
    const int32_t H = p->channels;
    const int32_t groups = (H + 3) >> 2;
    const int32_t *dz = acc, *dp = acc + 4 * groups, *dr = acc + 8 * groups;
    const int separate_r = mg_mingru_fast_dots(p, u, xq, acc);
    int32_t c;
    for (c = 0; c < H; ++c) {
        int8_t zp, hb;
        const int8_t gv = mg_mingru_fast_g1(p, c, dz, dp, dr, separate_r, &zp);
        if (s) {
            h16[c] = mg_fstate16_update1(s, (s->z16_lut + 128)[zp], gv, h16[c], &hb);
            h8[c] = hb;
        } else {
            const int8_t z = (p->sig_z + 128)[zp];
            hb = h[c];
            hb = mg_fadd1(p->add_h, hb, mg_fmul1(p->mul, z, mg_fsub1(p->sub, gv, hb)));
            h[c] = hb;
        }
        if (p->add_v) {
            v[c] = mg_fadd1_res(p->add_v, p->add_v_swap, u[c], hb);
        }
    }
}

/* One step, h [H] int8 updated in place (and v where add_v is set). */
MG_FAST_INLINE void mg_mingru_fast_s8(const mg_mingru_fast_t *p, const int8_t *u, int8_t *h,
                                      uint32_t *xq, int32_t *acc, int8_t *v)
{
    mg_mingru_fast_step(p, (const mg_state16_params_t *)0, u, h, (int16_t *)0, (int8_t *)0, xq,
                        acc, v);
}

/* One step with an int16 state: h [H] int16 updated in place, h8 [H] = int8 h_new (and v
 * where add_v is set). Offsets of the int16 ops are 0 (checked by convert/state16.py). */
MG_FAST_INLINE void mg_mingru_fast_s16(const mg_mingru_fast_t *p, const mg_state16_params_t *s,
                                       const int8_t *u, int16_t *h, int8_t *h8, uint32_t *xq,
                                       int32_t *acc, int8_t *v)
{
    mg_mingru_fast_step(p, s, u, (int8_t *)0, h, h8, xq, acc, v);
}

/* ---- the int16 minGRU input (mg_mingru.h mg_mingru_step_u16) -------------------------- */

/* Tables of the candidate's int8 part, built by the generator (convert/codegen_mgrade.py). */
typedef struct {
    const mg_input16_params_t *q;  /* the 16x8 FCs' weights, p8 / r8 and the residual */
    const mg_ffc_params_t *gate;   /* the FCs' outputs from their dots (bias in the rows) */
    const mg_ffc_params_t *cand;
    const mg_ffc_params_t *relu_fc;  /* NULL without a RELU FC */
    const int8_t *sig_q;           /* [256] LOGISTIC(MINIMUM(p, c)) (min_const NULL) or LOGISTIC */
    const int8_t *min_const;       /* per-channel MINIMUM constant, or NULL (in sig_q) */
    const int8_t *relu;            /* [256] RELU op table, or NULL */
    /* g as two tables of one input where the RELU FC shares the candidate's dot
     * (convert/codegen_fast.g_split_tables with p8 / r8), or NULL:
     * g = g_neg[p8] where the dot <= g_split[c], else g_pos[r8] */
    const int32_t *g_split;        /* [H] */
    const int8_t *g_neg;           /* [256] */
    const int8_t *g_pos;           /* [256] */
    /* MG_FDOT16_W16 builds: the FCs' weights as mg_fdot16_w16 words (codegen_fast.
     * fdot16_w16_layout), or NULL (the int8 dots; relu_w16 NULL where it shares cand's dot) */
    const uint32_t *gate_w16;
    const uint32_t *cand_w16;
    const uint32_t *relu_w16;
} mg_input16_fast_t;

/* u16 [depth] -> xs [2 * (depth / 4)] words: per block of 4, (u0, u2) and (u1, u3) as int16
 * halfwords, so that SXTB16 of a weight word and of it shifted by 8 pair with them. */
void mg_fpack16(const int16_t *u16, int32_t depth, uint32_t *xs);

/* SXTB16(x ROR 8): bytes 1 and 3 sign-extended to halfwords (one instruction with DSP). */
MG_FAST_INLINE uint32_t mg_sxtb16_ror8(uint32_t x)
{
#if MG_DSP_NATIVE && defined(__GNUC__)
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return mg_sxtb16(x >> 8);
#endif
}

/* a + the 4 products of the int8 weights w[0..3] with their int16 inputs, packed as
 * mg_fpack16 packs them (x0: u0, u2; x1: u1, u3): SXTB16 of the weight word and of it
 * rotated by 8, two SMLAD. */
MG_FAST_INLINE int32_t mg_fdot16_word(const int8_t *w, uint32_t x0, uint32_t x1, int32_t a)
{
    const uint32_t v = mg_fload4(w);
    return mg_smlad(mg_sxtb16_ror8(v), x1, mg_smlad(mg_sxtb16(v), x0, a));
}

/* sum_d w[d] u16[d] of one int8 weight row (2 SMLAD per 4 weights; the depth % 4 tail from
 * u16 directly). |sum| < 2^31 (generator-checked: depth * 2^15 * 2^7). */
MG_FAST_INLINE int32_t mg_fdot16(const int8_t *w, const uint32_t *xs, const int16_t *u16,
                                 int32_t depth)
{
    int32_t acc = 0;
    int32_t k, d;
    const int32_t blocks = depth >> 2;
    for (k = 0; k < blocks; ++k) {
        acc = mg_fdot16_word(w + 4 * k, xs[2 * k], xs[2 * k + 1], acc);
    }
    for (d = 4 * blocks; d < depth; ++d) {
        acc += (int32_t)w[d] * (int32_t)u16[d];
    }
    return acc;
}

/* d[j] = mg_fdot16 of rows j < n (n <= 4) of w (row-major, `depth` per row): with n = 4 the
 * packed input words are loaded once per block for the 4 rows (as mg_ffc_dot shares its
 * expanded input): 2 + 4 x (LDR, SXTB16, SXTB16 ROR, 2 SMLAD) per 16 MACs. */
MG_FAST_INLINE void mg_fdot16_x4(const int8_t *w, const uint32_t *xs, const int16_t *u16,
                                 int32_t depth, int32_t n, int32_t *d)
{
    int32_t k = 0, j;
    /* without the DSP instructions their plain-C forms cost ~10 instructions per MAC; a
     * direct multiply-accumulate of the int16 inputs (load, load, multiply, add) is ~4.5, with
     * each input loaded once for the 4 rows: there the block loop is skipped and the
     * leftover-input loop takes the whole depth */
    if (n == 4) {
        const int8_t *w1 = w + depth, *w2 = w1 + depth, *w3 = w2 + depth;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#if MG_DSP_NATIVE
        const int32_t blocks = depth >> 2;
        for (k = 0; k < blocks; ++k) {
            const uint32_t x0 = xs[2 * k], x1 = xs[2 * k + 1];
            a0 = mg_fdot16_word(w + 4 * k, x0, x1, a0);
            a1 = mg_fdot16_word(w1 + 4 * k, x0, x1, a1);
            a2 = mg_fdot16_word(w2 + 4 * k, x0, x1, a2);
            a3 = mg_fdot16_word(w3 + 4 * k, x0, x1, a3);
        }
        k = 4 * blocks;
#else
        (void)xs;
#endif
        for (; k < depth; ++k) {
            const int32_t x = u16[k];
            a0 += (int32_t)w[k] * x;
            a1 += (int32_t)w1[k] * x;
            a2 += (int32_t)w2[k] * x;
            a3 += (int32_t)w3[k] * x;
        }
        d[0] = a0;
        d[1] = a1;
        d[2] = a2;
        d[3] = a3;
        return;
    }
    for (j = 0; j < n; ++j) {
#if MG_DSP_NATIVE
        d[j] = mg_fdot16(w + j * depth, xs, u16, depth);
#else
        const int8_t *wj = w + j * depth;
        int32_t a = 0;
        for (k = 0; k < depth; ++k) {
            a += (int32_t)wj[k] * (int32_t)u16[k];
        }
        d[j] = a;
#endif
    }
}

/* int16 ADD of two int16 values (zero points 0, left shift 15): mg_add1_s16. */
MG_FAST_INLINE int32_t mg_fadd16(const mg_add_params_t *p, int32_t a, int32_t b)
{
    const int ls = (int)p->left_shift;
    return mg_fadd16_out(p, mg_fadd16_in(a, ls, p->input1_multiplier, (int)p->input1_shift)
                                + mg_fadd16_in(b, ls, p->input2_multiplier, (int)p->input2_shift));
}

/* mg_input16_front on the fast helpers (the requantizations' zero points are in the params). */
MG_FAST_INLINE void mg_input16_front_fast(const mg_input16_params_t *q, int32_t n,
                                          const int8_t *frame, const int8_t *conv, int16_t *u16)
{
    int32_t c;
    for (c = 0; c < n; ++c) {
        u16[c] = (int16_t)mg_fadd16(q->add_u, mg_frequant8(q->frame16, frame[c]),
                                    mg_frequant8(q->conv16, conv[c]));
    }
}

/* mg_input16_front_c16 on the fast helpers: the conv output is int16 already (conv16). */
MG_FAST_INLINE void mg_input16_front_c16_fast(const mg_input16_params_t *q, int32_t n,
                                              const int8_t *frame, const int16_t *c16,
                                              int16_t *u16)
{
    int32_t c;
    for (c = 0; c < n; ++c) {
        u16[c] = (int16_t)mg_fadd16(q->add_u, mg_frequant8(q->frame16, frame[c]), c16[c]);
    }
}

/* mg_delay_step_s16 (conv16) on channel-major taps, the int16 tap of each int8 value from a
 * 256-entry table and the dot product in int32 (taps x 2^7 x 2^15 < 2^31: generator-checked)
 * before the int64 bias and requantization. */
typedef struct {
    const mg_delay16_params_t *p;   /* ring layout, multipliers, int16 range, int64 bias */
    const uint16_t *delay;          /* [H * N] channel-major: delay[c * N + e] */
    const int8_t *filter;           /* [H * N] channel-major */
    const int16_t *taps16;          /* [256] QUANTIZE(int8 -> int16) of value v at v + 128 */
} mg_delay16_fast_t;

MG_FAST_INLINE void mg_delay_fast_s16(const mg_delay16_fast_t *f, int8_t *ring, uint32_t t,
                                      const int8_t *frame, int16_t *out16)
{
    const mg_delay_params_t *d = f->p->d;
    const int64_t *bias = f->p->bias;
    const int16_t *lut = f->taps16 + 128;
    const uint16_t *dl = f->delay;
    const int8_t *fl = f->filter;
    int32_t c;
    for (c = 0; c < d->channels; ++c, dl += d->taps, fl += d->taps) {
        const int32_t acc = mg_delay_fast_dot(ring, d->ring_len, d->ring_off, c, t, dl, fl,
                                              d->taps, frame[c], 1, lut);
        const int32_t y = mg_mbqm64(bias ? (int64_t)acc + bias[c] : (int64_t)acc, d->multiplier[c],
                      d->shift[c]);
        out16[c] = (int16_t)(y < d->act_min ? d->act_min : y > d->act_max ? d->act_max : y);
    }
}

/* mg_mingru_step_u16 with the dot products above and the candidate's tables; xs: scratch of
 * 2 * (H / 4) words. The FCs' input and filter offsets are 0 (generator-checked). */
#if MG_FFC_DOT_ASM
/* d[c] = sum_k w[c][k] u16[k] for the 4 * groups rows of w (row-major int8, `depth` per
 * row) over the first 4 * (depth / 4) inputs, xs = mg_fpack16(u16): Thumb-2 assembly, per
 * block of 4 inputs one LDRD of the packed pair and per row LDR, SXTB16, SXTB16 ROR #8, two
 * SMLAD (22 instructions per 16 MACs, 2 blocks a turn). */
void mg_fdot16_rows4(const int8_t *w, const uint32_t *xs, int32_t depth, int32_t groups,
                     int32_t *d);

/* d[c] = sum_k w[c][k] u16[k] for the 4 * groups rows of w16 (the int16 weights in the
 * codegen_fast.fdot16_w16_layout order) over the first 4 * blocks inputs, xs = mg_fpack16(u16):
 * Thumb-2 assembly, per block of 4 inputs one LDRD of the packed pair and per 2 rows one LDM of
 * their 4 weight words and 4 SMLAD (11 instructions per 16 MACs, 4 blocks a turn). */
void mg_fdot16_w16(const uint32_t *w16, const uint32_t *xs, int32_t blocks, int32_t groups,
                   int32_t *d);

/* mg_fdot16_x4 of all n rows of w into d[0..n). */
MG_FAST_INLINE void mg_fdot16_all(const int8_t *w, const uint32_t *xs, const int16_t *u16,
                                  int32_t depth, int32_t n, int32_t *d)
{
    const int32_t full = n >> 2, k0 = depth & ~3;
    int32_t c, k;
    mg_fdot16_rows4(w, xs, depth, full, d);
    if (k0 < depth) {               /* the depth % 4 tail of the full groups' rows */
        for (c = 0; c < 4 * full; ++c) {
            for (k = k0; k < depth; ++k) {
                d[c] += (int32_t)w[c * depth + k] * (int32_t)u16[k];
            }
        }
    }
    if (n & 3) {
        mg_fdot16_x4(w + 4 * full * depth, xs, u16, depth, n & 3, d + 4 * full);
    }
}

/* The same dots from the int16 copy w16 of w (NULL: from w); d: 4 * ((n + 3) / 4) words. */
MG_FAST_INLINE void mg_fdot16_all_w(const uint32_t *w16, const int8_t *w, const uint32_t *xs,
                                    const int16_t *u16, int32_t depth, int32_t n, int32_t *d)
{
#if MG_FDOT16_W16
    if (w16 != 0) {
        const int32_t k0 = depth & ~3;
        int32_t c, k;
        mg_fdot16_w16(w16, xs, depth >> 2, (n + 3) >> 2, d);
        for (c = 0; c < n && k0 < depth; ++c) {     /* the depth % 4 tail from the int8 rows */
            for (k = k0; k < depth; ++k) {
                d[c] += (int32_t)w[c * depth + k] * (int32_t)u16[k];
            }
        }
        return;
    }
#else
    (void)w16;
#endif
    mg_fdot16_all(w, xs, u16, depth, n, d);
}
#endif

MG_FAST_INLINE void mg_mingru_fast_u16(const mg_mingru_params_t *p, const mg_state16_params_t *s,
                                       const mg_input16_fast_t *f, const int16_t *u16,
                                       int16_t *h, int8_t *h8, int8_t *v8, uint32_t *xs,
                                       int32_t *acc)
{
    const mg_input16_params_t *q = f->q;
    const int32_t H = p->channels, depth = q->gate.fc->accum_depth;
    const int8_t *sig_q = f->sig_q + 128;
    const int separate_r = q->relu_fc.fc != 0 && !p->relu_fc_shares_dot;
    int32_t c0, j;
#if MG_FFC_DOT_ASM
    const int32_t H4 = (H + 3) & ~3;
#endif
#if MG_DSP_NATIVE
    mg_fpack16(u16, depth, xs);     /* (the plain-C dots read u16 directly) */
#endif
#if MG_FFC_DOT_ASM                  /* every dot first (acc: 2 or 3 x H4 words) */
    mg_fdot16_all_w(f->gate_w16, q->gate.weights, xs, u16, depth, H, acc);
    mg_fdot16_all_w(f->cand_w16, q->cand.weights, xs, u16, depth, H, acc + H4);
    if (separate_r) {
        mg_fdot16_all_w(f->relu_w16, q->relu_fc.weights, xs, u16, depth, H, acc + 2 * H4);
    }
#else
    (void)acc;
#endif
    for (c0 = 0; c0 < H; c0 += 4) {     /* the dots of 4 channels, then their tails */
        const int32_t n = H - c0 < 4 ? H - c0 : 4;
#if MG_FFC_DOT_ASM
        const int32_t *dz = acc + c0, *dp = acc + H4 + c0, *dr = acc + 2 * H4 + c0;
#else
        int32_t dz[4], dp[4], dr[4];
        mg_fdot16_x4(q->gate.weights + c0 * depth, xs, u16, depth, n, dz);
        mg_fdot16_x4(q->cand.weights + c0 * depth, xs, u16, depth, n, dp);
        if (separate_r) {
            mg_fdot16_x4(q->relu_fc.weights + c0 * depth, xs, u16, depth, n, dr);
        }
#endif
        for (j = 0; j < n; ++j) {
            const int32_t c = c0 + j;
            const int16_t z16 = mg_logistic1_s16(s->sig16,
                                                 (int16_t)mg_ffc_out32(f->gate, dz[j], c));
            int8_t gv, hb;
            int32_t hn;
            if (f->g_split) {
                if (dp[j] <= f->g_split[c]) {
                    gv = (f->g_neg + 128)[mg_frequant1(q->p8, mg_ffc_out32(f->cand, dp[j], c))];
                } else {
                    int32_t r = mg_frequant1(q->r8, mg_ffc_out32(f->relu_fc, dp[j], c));
                    if (f->relu) {
                        r = (f->relu + 128)[r];
                    }
                    gv = (f->g_pos + 128)[r];
                }
            } else {
                const int8_t pv = (int8_t)mg_frequant1(q->p8, mg_ffc_out32(f->cand, dp[j], c));
                const int8_t mn = f->min_const ? f->min_const[c] : 127;
                int8_t r = pv;
                if (q->relu_fc.fc != 0) {
                    r = (int8_t)mg_frequant1(q->r8, mg_ffc_out32(f->relu_fc,
                                                                 separate_r ? dr[j] : dp[j], c));
                }
                if (f->relu) {
                    r = (f->relu + 128)[r];
                }
                gv = mg_fadd1(p->add_g, r, sig_q[pv < mn ? pv : mn]);
            }
            hn = mg_fstate16_update1(s, z16, gv, h[c], &hb);
            h[c] = (int16_t)hn;
            h8[c] = hb;
            v8[c] = (int8_t)mg_frequant1(q->v8, mg_fadd16(q->add_v, u16[c], hn));
        }
    }
}

/* ---- per-op profile hook (MG_PROFILE builds; the harness defines mg_prof_mark) -------- */
#ifdef MG_PROFILE
enum { MG_PROF_DELAY = 0, MG_PROF_FC, MG_PROF_MINGRU, MG_PROF_ELEM, MG_PROF_READOUT,
       MG_PROF_KINDS };
void mg_prof_mark(int kind);   /* charges the time since the previous mark to `kind` */
#define MG_PROF(kind) mg_prof_mark(kind)
#else
#define MG_PROF(kind) ((void)0)
#endif

#ifdef __cplusplus
}
#endif

#endif /* MG_FAST_H */
