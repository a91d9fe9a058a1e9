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

typedef struct {
    const mg_requant_params_t *z16;   /* QUANTIZE z: int8 -> int16 */
    const mg_requant_params_t *g16;   /* QUANTIZE g: int8 -> int16 */
    const mg_add_params_t *sub;       /* d16 = SUB(g16, h16)        (left_shift 15) */
    const mg_mul_params_t *mul;       /* m16 = MUL(z16, d16) */
    const mg_add_params_t *add_h;     /* h16' = ADD(h16, m16)       (input1 = h) */
    const mg_requant_params_t *h8;    /* QUANTIZE h16': int16 -> int8 */
} mg_state16_params_t;

/* int16 ADD / SUB / MUL, one element (mg_elem.h's arithmetic on int16 values). */
static inline int16_t mg_add1_s16(const mg_add_params_t *p, int16_t a, int16_t b)
{
    return (int16_t)mg_add_out32(p, mg_add_scaled1(p, a, p->input1_offset, p->input1_multiplier,
                                                   p->input1_shift)
                                       + mg_add_scaled1(p, b, p->input2_offset,
                                                        p->input2_multiplier, p->input2_shift));
}

static inline int16_t mg_sub1_s16(const mg_add_params_t *p, int16_t a, int16_t b)
{
    return (int16_t)mg_add_out32(p, mg_add_scaled1(p, a, p->input1_offset, p->input1_multiplier,
                                                   p->input1_shift)
                                       - mg_add_scaled1(p, b, p->input2_offset,
                                                        p->input2_multiplier, p->input2_shift));
}

static inline int16_t mg_mul1_s16(const mg_mul_params_t *p, int16_t a, int16_t b)
{
    return (int16_t)mg_mul32(p, a, b);
}

/* The whole tail for one channel: returns h16', writes the int8 h' to *h8. */
static inline int16_t mg_state16_update1(const mg_state16_params_t *s, int8_t z, int8_t g,
                                         int16_t h, int8_t *h8)
{
    const int16_t z16 = (int16_t)mg_requant32(s->z16, z);
    const int16_t g16 = (int16_t)mg_requant32(s->g16, g);
    const int16_t hn = mg_add1_s16(s->add_h, h, mg_mul1_s16(s->mul, z16,
                                                            mg_sub1_s16(s->sub, g16, h)));
    *h8 = (int8_t)mg_requant32(s->h8, hn);
    return hn;
}

#ifdef __cplusplus
}
#endif

#endif /* MG_STATE16_H */
