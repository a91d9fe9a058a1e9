/* mg_elem.h - one output element of each int8 kernel, TFLite-Micro reference arithmetic.
 *
 * The array kernels (mg_kernels.c) and the fused minGRU step (mg_mingru.c) both compute
 * through these, so the two paths cannot drift apart. Header-only `static inline`: the hot
 * per-element code inlines into both translation units. Parameter structs: mg_kernels.h.
 */
#ifndef MG_ELEM_H
#define MG_ELEM_H

#include <limits.h>
#include <stdint.h>

#include "mg_kernels.h"
#include "mg_quant.h"

/* `static inline`, and with GCC inlined before its early optimizations: a body shared by two
 * kernels (`wide`, `mapped`: constant flags) compiles in each as if written out there. */
#if defined(__GNUC__)
#define MG_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define MG_ALWAYS_INLINE static inline
#endif

static inline int32_t mg_clamp32(int32_t v, int32_t lo, int32_t hi)
{
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return v;
}

/* Requantize an int32 accumulator (bias included) to int8: multiplier/shift, output zero
 * point, clamp to the activation range. FULLY_CONNECTED, DEPTHWISE_CONV_2D and the delay step. */
static inline int8_t mg_requant_clamp1(int32_t acc, int32_t mult, int32_t shift,
                                       int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return (int8_t)mg_clamp32(mg_mbqm(acc, mult, (int)shift) + output_offset, act_min, act_max);
}

/* FULLY_CONNECTED: accumulator of one output channel (weights row w, input in), no bias. */
static inline int32_t mg_fc_dot1(const MG_ROM mg_fc_params_t *p, const int8_t *in,
                                  const MG_ROM int8_t *w)
{
    int32_t acc = 0;
    int32_t d;
    if (p->per_channel) {
#if INT_MAX <= 32767
        /* 16-bit int (AVR): |w * (in + input_offset)| <= 128 * 255 fits 16 bits (input_offset
         * = -zero point of an int8 input), so an int product gives the same value with one
         * hardware multiply instead of a 32x32 library call (on 32-bit cores the int32 form
         * below is the cheaper one: no sign extensions) */
        const int16_t off = (int16_t)p->input_offset;
        for (d = 0; d < p->accum_depth; ++d) {
            acc += (int16_t)((int16_t)w[d] * (int16_t)(in[d] + off));
        }
#else
        for (d = 0; d < p->accum_depth; ++d) {
            acc += (int32_t)w[d] * ((int32_t)in[d] + p->input_offset);
        }
#endif
    } else {
        for (d = 0; d < p->accum_depth; ++d) {
            acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)in[d] + p->input_offset);
        }
    }
    return acc;
}

/* FULLY_CONNECTED in TFLite's 16x8 mode with an int32 bias (int16 input, int8 weights):
 * TFLM accumulates in int32 exactly as for int8 input (convert/widen.py widen_input keeps the
 * depth small enough: |acc| < depth * 2^15 * 2^7). */
static inline int32_t mg_fc_dot1_s16(const MG_ROM mg_fc_params_t *p, const int16_t *in,
                                      const MG_ROM int8_t *w)
{
    int32_t acc = 0;
    int32_t d;
    const int32_t fo = p->per_channel ? 0 : p->filter_offset;
    for (d = 0; d < p->accum_depth; ++d) {
        acc += ((int32_t)w[d] + fo) * ((int32_t)in[d] + p->input_offset);
    }
    return acc;
}

/* FULLY_CONNECTED: the requantized, clamped accumulator of channel oc as int32 (an int16
 * output: act_min/act_max span int16). */
static inline int32_t mg_fc_out32(const MG_ROM mg_fc_params_t *p, int32_t acc, int32_t oc)
{
    const int32_t m = p->per_channel ? p->multiplier[oc] : p->multiplier[0];
    const int32_t s = p->per_channel ? p->shift[oc] : p->shift[0];
    return mg_clamp32(mg_mbqm(acc, m, (int)s) + p->output_offset, p->act_min, p->act_max);
}

/* FULLY_CONNECTED: requantize and clamp the accumulator (bias included) of channel oc. */
static inline int8_t mg_fc_out1(const MG_ROM mg_fc_params_t *p, int32_t acc, int32_t oc)
{
    return (int8_t)mg_fc_out32(p, acc, oc);
}

/* FULLY_CONNECTED of either input width, the one body of mg_fully_connected_s8
 * (mg_kernels.c) and mg_fully_connected_s16 (mg_ops16.h), which inline it with `wide` a
 * constant: input [batches, accum_depth] int8 (wide 0: in8 -> out8) or int16 (wide 1: in16 ->
 * out16, TFLite's 16x8 mode), filter [output_depth, accum_depth] int8, bias int32 or NULL,
 * output [batches, output_depth]. */
MG_ALWAYS_INLINE void mg_fc_rows(const MG_ROM mg_fc_params_t *p, int wide, const int8_t *in8,
                                const int16_t *in16, const MG_ROM int8_t *filter,
                                const MG_ROM int32_t *bias, int8_t *out8, int16_t *out16)
{
    int32_t b, oc;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x8 = wide ? (const int8_t *)0 : in8 + b * p->accum_depth;
        const int16_t *x16 = wide ? in16 + b * p->accum_depth : (const int16_t *)0;
        for (oc = 0; oc < p->output_depth; ++oc) {
            int32_t acc = wide ? mg_fc_dot1_s16(p, x16, filter + oc * p->accum_depth)
                               : mg_fc_dot1(p, x8, filter + oc * p->accum_depth);
            if (bias) {
                acc += bias[oc];
            }
            if (wide) {
                out16[b * p->output_depth + oc] = (int16_t)mg_fc_out32(p, acc, oc);
            } else {
                out8[b * p->output_depth + oc] = mg_fc_out1(p, acc, oc);
            }
        }
    }
}

/* ADD / SUB: one input rescaled to the common left-shifted scale. */
/* ADD / SUB of int8 or int16 values (TFLite's general rescaling path): one input rescaled,
 * and the rescaled sum to the output, clamped to the activation range. */
static inline int32_t mg_add_scaled1(const MG_ROM mg_add_params_t *p, int32_t x, int32_t offset,
                                     int32_t mult, int32_t shift)
{
    const int32_t v = (offset + x) * ((int32_t)1 << p->left_shift);
    return mg_mbqm_smaller_than_one(v, mult, (int)shift);
}

static inline int32_t mg_add_out32(const MG_ROM mg_add_params_t *p, int32_t raw)
{
    const int32_t out = mg_mbqm_smaller_than_one(raw, p->output_multiplier, (int)p->output_shift)
                        + p->output_offset;
    return mg_clamp32(out, p->act_min, p->act_max);
}

static inline int8_t mg_add_out1(const MG_ROM mg_add_params_t *p, int32_t raw)
{
    return (int8_t)mg_add_out32(p, raw);
}

static inline int8_t mg_add1_s8(const MG_ROM mg_add_params_t *p, int8_t a, int8_t b)
{
    return mg_add_out1(p, mg_add_scaled1(p, a, p->input1_offset, p->input1_multiplier,
                                         p->input1_shift)
                              + mg_add_scaled1(p, b, p->input2_offset, p->input2_multiplier,
                                               p->input2_shift));
}

static inline int8_t mg_sub1_s8(const MG_ROM mg_add_params_t *p, int8_t a, int8_t b)
{
    return mg_add_out1(p, mg_add_scaled1(p, a, p->input1_offset, p->input1_multiplier,
                                         p->input1_shift)
                              - mg_add_scaled1(p, b, p->input2_offset, p->input2_multiplier,
                                               p->input2_shift));
}

/* MUL of int8 or int16 values, clamped to the activation range. */
static inline int32_t mg_mul32(const MG_ROM mg_mul_params_t *p, int32_t a, int32_t b)
{
    const int32_t v1 = p->input1_offset + a;
    const int32_t v2 = p->input2_offset + b;
    const int32_t out = p->output_offset
                        + mg_mbqm(v1 * v2, p->output_multiplier, (int)p->output_shift);
    return mg_clamp32(out, p->act_min, p->act_max);
}

static inline int8_t mg_mul1_s8(const MG_ROM mg_mul_params_t *p, int8_t a, int8_t b)
{
    return (int8_t)mg_mul32(p, a, b);
}

static inline int8_t mg_logistic1_s8(const MG_ROM mg_logistic_params_t *p, int8_t in)
{
    const int32_t x = (int32_t)in - p->input_zero_point;
    if (x <= -p->input_range_radius) {
        return -128;
    }
    if (x >= p->input_range_radius) {
        return 127;
    }
    return (int8_t)mg_clamp32(
        mg_rdbpot(mg_logistic_q4(mg_mbqm(x, p->input_multiplier, (int)p->input_left_shift)),
                  31 - 8) - 128,
        -128, 127);
}

/* QUANTIZE (requantization of an int8 or int16 value; int8 -> int8 is also RELU), clamped to
 * the output range act_min..act_max. */
static inline int32_t mg_requant32(const MG_ROM mg_requant_params_t *p, int32_t in)
{
    const int32_t v = p->output_offset
                      + mg_mbqm(in - p->input_offset, p->multiplier, (int)p->shift);
    return mg_clamp32(v, p->act_min, p->act_max);
}

static inline int8_t mg_requant1_s8(const MG_ROM mg_requant_params_t *p, int8_t in)
{
    return (int8_t)mg_requant32(p, in);
}

/* TFLite's MultiplyByQuantizedMultiplier on an int64 value (the 16x8 convolutions): the
 * multiplier reduced to 16 bits, one rounding shift. |x| < 2^47. */
static inline int32_t mg_mbqm64(int64_t x, int32_t multiplier, int32_t shift)
{
    const int64_t reduced = multiplier < 0x7FFF0000 ? (int64_t)((multiplier + (1 << 15)) >> 16)
                                                    : (int64_t)0x7FFF;
    const int total_shift = 15 - (int)shift;
    const int64_t round = (int64_t)1 << (total_shift - 1);
    return (int32_t)((x * reduced + round) >> total_shift);
}

#endif /* MG_ELEM_H */
