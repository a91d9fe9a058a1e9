/* mg_state16.h - the int16 minGRU state update (convert/widen.py) with TFLite-Micro's
 * reference arithmetic, one element at a time.
 *
 * Replaces, per channel, the widened graph's tail (every int16 tensor has zero point 0):
 *     z16 = QUANTIZE(z8)                      int8 gate (widen gate16 = False), or
 *     z16 = LOGISTIC(QUANTIZE(z_pre8))        int16 gate (gate16 = True): int16 LOGISTIC
 *     g16 = QUANTIZE(g8)                      int8 -> int16 (Requantize)
 *     d16 = SUB(g16, h16);  m16 = MUL(z16, d16);  h16' = ADD(h16, m16)
 *     h8 = QUANTIZE(h16')                                 int16 -> int8, for the residual
 * TFLM runs int16 ADD/SUB through the general rescaling path (left_shift 15), int16 MUL
 * through MultiplyByQuantizedMultiplier of the int32 product, QUANTIZE through
 * MultiplyByQuantizedMultiplier of (x - zp_in) plus zp_out, clamped, int16 LOGISTIC by linear
 * interpolation in mg_sigmoid_lut16 (mg_logistic1_s16). Parameters: computed
 * offline as TFLM's Prepare does (convert/state16.py); the structs are mg_kernels.h's, the per-element arithmetic mg_elem.h's.
 * Header-only `static inline`, like mg_elem.h, for the portable and the fast step alike.
 */
#ifndef MG_STATE16_H
#define MG_STATE16_H

#include <stdint.h>

#include "mg_elem.h"
#include "mg_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* int16 LOGISTIC, input zero point 0, output scale 2^-15: x is rescaled to units of
 * 1/(3 * 4096) as (x * input_multiplier + round) >> input_left_shift (TFLM's power-of-two
 * case already resolved by convert/state16.logistic16_params). */
typedef struct {
    int32_t input_multiplier;         /* < 2^15 */
    int32_t input_left_shift;         /* 0..31 */
} mg_logistic16_params_t;

typedef struct {
    const MG_ROM mg_requant_params_t *z16;   /* int8 gate: QUANTIZE z8 -> int16; else NULL */
    const MG_ROM mg_requant_params_t *zq16;  /* int16 gate: QUANTIZE z_pre8 -> int16; else NULL */
    const MG_ROM mg_logistic16_params_t *sig16;  /* int16 gate: its LOGISTIC; else NULL */
    const MG_ROM int16_t *z16_lut;           /* [256] z16 of the tail's int8 input (index + 128),
                                         read by the fast path only (NULL without MG_FAST) */
    const MG_ROM mg_requant_params_t *g16;   /* QUANTIZE g: int8 -> int16 */
    const MG_ROM mg_add_params_t *sub;       /* d16 = SUB(g16, h16)        (left_shift 15) */
    const MG_ROM mg_mul_params_t *mul;       /* m16 = MUL(z16, d16) */
    const MG_ROM mg_add_params_t *add_h;     /* h16' = ADD(h16, m16)       (input1 = h) */
    const MG_ROM mg_requant_params_t *h8;    /* QUANTIZE h16': int16 -> int8 */
} mg_state16_params_t;

/* int16 ADD / SUB / MUL, one element (mg_elem.h's arithmetic on int16 values). */
static inline int16_t mg_add1_s16(const MG_ROM mg_add_params_t *p, int16_t a, int16_t b)
{
    return (int16_t)mg_add_out32(p, mg_add_scaled1(p, a, p->input1_offset, p->input1_multiplier,
                                                   p->input1_shift)
                                       + mg_add_scaled1(p, b, p->input2_offset,
                                                        p->input2_multiplier, p->input2_shift));
}

static inline int16_t mg_sub1_s16(const MG_ROM mg_add_params_t *p, int16_t a, int16_t b)
{
    return (int16_t)mg_add_out32(p, mg_add_scaled1(p, a, p->input1_offset, p->input1_multiplier,
                                                   p->input1_shift)
                                       - mg_add_scaled1(p, b, p->input2_offset,
                                                        p->input2_multiplier, p->input2_shift));
}

static inline int16_t mg_mul1_s16(const MG_ROM mg_mul_params_t *p, int16_t a, int16_t b)
{
    return (int16_t)mg_mul32(p, a, b);
}

/* int16 LOGISTIC of one value -> [0, 32767] (TFLM's reference_integer_ops::Logistic):
 * |v| in units of 1/(3 * 4096) indexes the table by its top bits (v >> 9, one entry per 1/24)
 * and interpolates on the 9 bits below; the table's 0.16 result, with 9 fraction bits of the
 * interpolation, is rounded to 0.15; a negative input mirrors (1 - sigmoid(|v|)). */
static inline int16_t mg_logistic1_s16(const MG_ROM mg_logistic16_params_t *p, int16_t x)
{
    const int sh = (int)p->input_left_shift;
    const int32_t v = ((int32_t)x * p->input_multiplier + (sh > 0 ? (int32_t)1 << (sh - 1) : 0))
                      >> sh;
    const uint32_t a = (uint32_t)(v < 0 ? -v : v);
    const uint32_t k = a >> 9;
    uint32_t r;
    if (k >= 255u) {
        r = (uint32_t)0x7FFF << 10;
    } else {
        const uint32_t lo = mg_sigmoid_lut16[k];
        r = (lo << 9) + (a & 0x1FFu) * (mg_sigmoid_lut16[k + 1] - lo);
    }
    r = v >= 0 ? r + ((uint32_t)1 << 9) : ((uint32_t)1 << 25) - r + ((uint32_t)1 << 9) - 1u;
    return (int16_t)(r >> 10);
}

/* The int16 gate z16 of the tail's int8 input z_in (z8, or z_pre8 with an int16 gate). */
static inline int16_t mg_state16_gate1(const MG_ROM mg_state16_params_t *s, int8_t z_in)
{
    if (mg_rom_nonnull(s->sig16)) {
        return mg_logistic1_s16(s->sig16, (int16_t)mg_requant32(s->zq16, z_in));
    }
    return (int16_t)mg_requant32(s->z16, z_in);
}

/* The tail from the int16 gate z16 on: returns h16', writes the int8 h' to *h8. */
static inline int16_t mg_state16_update_z16(const MG_ROM mg_state16_params_t *s, int16_t z16, int8_t g,
                                            int16_t h, int8_t *h8)
{
    const int16_t g16 = (int16_t)mg_requant32(s->g16, g);
    const int16_t hn = mg_add1_s16(s->add_h, h, mg_mul1_s16(s->mul, z16,
                                                            mg_sub1_s16(s->sub, g16, h)));
    *h8 = (int8_t)mg_requant32(s->h8, hn);
    return hn;
}

/* The whole tail for one channel: returns h16', writes the int8 h' to *h8. z_in: z8, or
 * z_pre8 with an int16 gate (s->sig16 set). */
static inline int16_t mg_state16_update1(const MG_ROM mg_state16_params_t *s, int8_t z_in, int8_t g,
                                         int16_t h, int8_t *h8)
{
    return mg_state16_update_z16(s, mg_state16_gate1(s, z_in), g, h, h8);
}

#ifdef __cplusplus
}
#endif

#endif /* MG_STATE16_H */
