/* mg_ops16.h - generic int16 array kernels for the widened step graphs (convert/widen.py
 * widen_mlp: TFLite's 16x8 mode), with TFLite-Micro's reference arithmetic:
 *
 *     QUANTIZE        int8 -> int16, int16 -> int8 (Requantize; mg_requant32)
 *     FULLY_CONNECTED int16 input, int8 weights, int32 bias, int16 output (16x8; TFLM
 *                     accumulates in int32 as for int8: convert/widen.py fc16_fits)
 *     ADD             int16 + int16 -> int16, elementwise, zero points 0 (left shift 15)
 *
 * Parameters: the structs of mg_kernels.h, computed offline as TFLM's Prepare does
 * (convert/ops16.py). The per-element arithmetic is mg_elem.h's and mg_state16.h's, shared
 * with the fused minGRU kernels. Header-only `static inline`: a package without int16 ops
 * compiles none of it. No fast variant: MG_FAST builds call these too.
 */
#ifndef MG_OPS16_H
#define MG_OPS16_H

#include <stdint.h>

#include "mg_elem.h"
#include "mg_kernels.h"
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
    int32_t b, c;
    for (b = 0; b < p->batches; ++b) {
        const int16_t *x = in + b * p->accum_depth;
        for (c = 0; c < p->output_depth; ++c) {
            int32_t acc = mg_fc_dot1_s16(p, x, filter + c * p->accum_depth);
            if (bias != NULL) {
                acc += bias[c];
            }
            out[b * p->output_depth + c] = (int16_t)mg_fc_out32(p, acc, c);
        }
    }
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

#endif /* MG_OPS16_H */
