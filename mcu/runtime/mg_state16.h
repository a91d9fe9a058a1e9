/* mg_state16.h - the int16 minGRU state update (convert/widen.py, gate16 = False) with
 * TFLite-Micro's reference arithmetic, one element at a time.
 *
 * Replaces, per channel, the widened graph's tail (every int16 tensor has zero point 0):
 *     z16 = QUANTIZE(z8);  g16 = QUANTIZE(g8)            int8 -> int16 (Requantize)
 *     d16 = SUB(g16, h16);  m16 = MUL(z16, d16);  h16' = ADD(h16, m16)
 *     h8 = QUANTIZE(h16')                                 int16 -> int8, for the residual
 * TFLM runs int16 ADD/SUB through the general rescaling path (left_shift 15), int16 MUL
 * through MultiplyByQuantizedMultiplier of the int32 product, QUANTIZE through
 * MultiplyByQuantizedMultiplier of (x - zp_in) plus zp_out, clamped. Parameters: computed
 * offline as TFLM's Prepare does (convert/state16.py); the structs are mg_kernels.h's.
 * Header-only `static inline`, like mg_elem.h, for the portable and the fast step alike.
 */
#ifndef MG_STATE16_H
#define MG_STATE16_H

#include <stdint.h>

#include "mg_kernels.h"
#include "mg_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const mg_requant_params_t *z16;   /* QUANTIZE z: int8 -> int16 */
    const mg_requant_params_t *g16;   /* QUANTIZE g: int8 -> int16 */
    const mg_add_params_t *sub;       /* d16 = SUB(g16, h16)        (left_shift 15) */
    const mg_mul_params_t *mul;       /* m16 = MUL(z16, d16) */
    const mg_add_params_t *add_h;     /* h16' = ADD(h16, m16)       (input1 = h) */
    const mg_requant_params_t *h8;    /* QUANTIZE h16': int16 -> int8 */
} mg_state16_params_t;

static inline int32_t mg_s16_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* QUANTIZE (requantize) of one int8 or int16 value; the output range is p->act_min..max. */
static inline int32_t mg_requant1_any(const mg_requant_params_t *p, int32_t x)
{
    return mg_s16_clamp(mg_mbqm(x - p->input_offset, p->multiplier, (int)p->shift)
                        + p->output_offset, p->act_min, p->act_max);
}

static inline int32_t mg_add16_in(const mg_add_params_t *p, int32_t x, int32_t offset,
                                  int32_t mult, int32_t shift)
{
    return mg_mbqm_smaller_than_one((offset + x) * ((int32_t)1 << p->left_shift), mult,
                                    (int)shift);
}

static inline int16_t mg_add16_out(const mg_add_params_t *p, int32_t raw)
{
    return (int16_t)mg_s16_clamp(mg_mbqm_smaller_than_one(raw, p->output_multiplier,
                                                          (int)p->output_shift)
                                 + p->output_offset, p->act_min, p->act_max);
}

/* int16 ADD / SUB / MUL, one element. */
static inline int16_t mg_add1_s16(const mg_add_params_t *p, int16_t a, int16_t b)
{
    return mg_add16_out(p, mg_add16_in(p, a, p->input1_offset, p->input1_multiplier,
                                       p->input1_shift)
                           + mg_add16_in(p, b, p->input2_offset, p->input2_multiplier,
                                         p->input2_shift));
}

static inline int16_t mg_sub1_s16(const mg_add_params_t *p, int16_t a, int16_t b)
{
    return mg_add16_out(p, mg_add16_in(p, a, p->input1_offset, p->input1_multiplier,
                                       p->input1_shift)
                           - mg_add16_in(p, b, p->input2_offset, p->input2_multiplier,
                                         p->input2_shift));
}

static inline int16_t mg_mul1_s16(const mg_mul_params_t *p, int16_t a, int16_t b)
{
    const int32_t v = (p->input1_offset + (int32_t)a) * (p->input2_offset + (int32_t)b);
    return (int16_t)mg_s16_clamp(mg_mbqm(v, p->output_multiplier, (int)p->output_shift)
                                 + p->output_offset, p->act_min, p->act_max);
}

/* The whole tail for one channel: returns h16', writes the int8 h' to *h8. */
static inline int16_t mg_state16_update1(const mg_state16_params_t *s, int8_t z, int8_t g,
                                         int16_t h, int8_t *h8)
{
    const int16_t z16 = (int16_t)mg_requant1_any(s->z16, z);
    const int16_t g16 = (int16_t)mg_requant1_any(s->g16, g);
    const int16_t hn = mg_add1_s16(s->add_h, h, mg_mul1_s16(s->mul, z16,
                                                            mg_sub1_s16(s->sub, g16, h)));
    *h8 = (int8_t)mg_requant1_any(s->h8, hn);
    return hn;
}

#ifdef __cplusplus
}
#endif

#endif /* MG_STATE16_H */
