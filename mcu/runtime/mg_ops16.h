/* mg_ops16.h - generic int16 array kernels for the widened step graphs (convert/widen.py
 * widen_mlp: TFLite's 16x8 mode), with TFLite-Micro's reference arithmetic:
 *
 *     QUANTIZE        int8 -> int16, int16 -> int8 (Requantize; mg_requant32)
 *     FULLY_CONNECTED int16 input, int8 weights, int32 bias, int16 output (16x8; TFLM
 *                     accumulates in int32 as for int8: convert/widen.py fc16_fits)
 *     ADD             int16 + int16 -> int16, elementwise, zero points 0 (left shift 15)
 *
 * and the int16 delay conv of the conv16 form (convert/widen.py widen_conv): the trimmed-ring
 * delay step of mg_delay.h with each int8 tap requantized to int16 and TFLite's 16x8
 * DEPTHWISE_CONV_2D (int64 accumulator and bias, MultiplyByQuantizedMultiplier on int64),
 * writing the conv output c16 that mg_input16_front_c16 adds to the frame.
 *
 * Parameters: the structs of mg_kernels.h, computed offline as TFLM's Prepare does
 * (convert/ops16.py). The per-element arithmetic is mg_elem.h's and mg_state16.h's, shared
 * with the fused minGRU kernels. Header-only `static inline`: a package without int16 ops
 * compiles none of it. No fast variant: MG_FAST builds call these too.
 */
#ifndef MG_OPS16_H
#define MG_OPS16_H

#include <stdint.h>

#include "mg_delay.h"
#include "mg_elem.h"
#include "mg_kernels.h"
#include "mg_mingru.h"
#include "mg_state16.h"

/* QUANTIZE int8 -> int16 (p->size elements). */
static inline void mg_requantize_s8_s16(const MG_ROM mg_requant_params_t *p, const int8_t *in,
                                        int16_t *out)
{
    int32_t k;
    for (k = 0; k < p->size; ++k) {
        out[k] = (int16_t)mg_requant32(p, in[k]);
    }
}

/* QUANTIZE int16 -> int8 (p->size elements). */
static inline void mg_requantize_s16_s8(const MG_ROM mg_requant_params_t *p, const int16_t *in,
                                        int8_t *out)
{
    int32_t k;
    for (k = 0; k < p->size; ++k) {
        out[k] = (int8_t)mg_requant32(p, in[k]);
    }
}

/* FULLY_CONNECTED 16x8: input [batches, accum_depth] int16, filter [output_depth,
 * accum_depth] int8, bias int32 or NULL, output [batches, output_depth] int16. */
static inline void mg_fully_connected_s16(const MG_ROM mg_fc_params_t *p, const int16_t *in,
                                          const MG_ROM int8_t *filter,
                                          const MG_ROM int32_t *bias, int16_t *out)
{
    mg_fc_rows(p, 1, (const int8_t *)0, in, filter, bias, (int8_t *)0, out);
}

/* ADD int16, n elements (no broadcast). */
static inline void mg_add_s16(const MG_ROM mg_add_params_t *p, int32_t n, const int16_t *a,
                              const int16_t *b, int16_t *out)
{
    int32_t k;
    for (k = 0; k < n; ++k) {
        out[k] = mg_add1_s16(p, a[k], b[k]);
    }
}

/* The delay conv with an int16 output (conv16 form). d: the ring layout, filter, per-channel
 * multipliers/shifts of the 16x8 conv and its int16 activation range (d->bias, the offsets
 * unused: the bias is int64, the int16 side has zero point 0). */
typedef struct {
    const MG_ROM mg_delay_params_t *d;
    const MG_ROM mg_requant_params_t *taps16;   /* QUANTIZE tap: int8 -> int16 */
    const MG_ROM int64_t *bias;                 /* [H] on taps16's scale x the filter's; NULL */
} mg_delay16_params_t;

/* Step t as mg_delay_step_s8 (the same ring slots, frame[c] written after its taps are
 * read), out16[c] = clamp(mbqm64(sum_e filter[e][c] * q16(tap_e) + bias[c])). */
static inline void mg_delay_step_s16(const MG_ROM mg_delay16_params_t *p, int8_t *ring,
                                     uint32_t t, const int8_t *frame, int16_t *out16)
{
    mg_delay_step(p->d, 1, p->taps16, p->bias, ring, t, frame, (int8_t *)0, out16);
}

/* u16[c] = ADD(QUANTIZE(frame8[c]), c16[c]) for c < n: mg_input16_front with the conv
 * output already int16 (q->conv16 unused). */
static inline void mg_input16_front_c16(const MG_ROM mg_input16_params_t *q, int32_t n,
                                        const int8_t *frame, const int16_t *c16, int16_t *u16)
{
    int32_t c;
    for (c = 0; c < n; ++c) {
        u16[c] = mg_add1_s16(q->add_u, (int16_t)mg_requant32(q->frame16, frame[c]), c16[c]);
    }
}

#endif /* MG_OPS16_H */
