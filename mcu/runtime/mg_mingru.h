/* mg_mingru.h - one fused int8 minGRU step with TFLite-Micro's arithmetic.
 *
 * Replaces the quantized op sequence the converter emits for
 *     z = sigmoid(FC_z(u));  p = FC_h(u)
 *     g = RELU(p) + sigmoid(MINIMUM(p, 0))          g(p) = p + 0.5 (p >= 0), sigmoid(p) else
 *     h_new = h + z * (g - h)
 * i.e. FULLY_CONNECTED (gate), FULLY_CONNECTED (candidate, once without and once with a fused
 * RELU, or one FC followed by a RELU op), LOGISTIC, MINIMUM, LOGISTIC, ADD, SUB, MUL, ADD.
 * Every op keeps its own quantization parameters (computed offline exactly as TFLM's Prepare
 * does) and the same integer arithmetic, evaluated channel by channel: no intermediate
 * buffers, bit-exact with the interpreter. When both candidate FCs read the same weights, the
 * dot product is computed once (integer sums: still exact).
 *
 * The state input and output carry identical quantization (convert/ ties them), so h is
 * updated in place and fed back as is.
 */
#ifndef MG_MINGRU_H
#define MG_MINGRU_H

#include <stdint.h>

#include "mg_kernels.h"
#include "mg_state16.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const mg_fc_params_t *fc;    /* output_depth = H, accum_depth = depth of u, batches = 1 */
    const int8_t *weights;       /* [H, depth] */
    const int32_t *bias;         /* [H] or NULL */
} mg_mingru_fc_t;

typedef struct {
    int32_t channels;                     /* H */
    mg_mingru_fc_t gate;                  /* z_pre = FC_z(u) */
    const mg_logistic_params_t *sig_z;    /* z = LOGISTIC(z_pre) */
    mg_mingru_fc_t cand;                  /* p = FC_h(u) (no activation) */
    const int8_t *min_const;              /* MINIMUM(p, min_const[c * min_stride]) */
    int32_t min_stride;                   /* 0: scalar constant, 1: per channel */
    const mg_logistic_params_t *sig_p;    /* q = LOGISTIC(MINIMUM(p, .)) */
    mg_mingru_fc_t relu_fc;               /* r_pre = FC(u); fc == NULL: r_pre = p */
    int32_t relu_fc_shares_dot;           /* relu_fc has cand's weights, input and offsets */
    const mg_requant_params_t *relu;      /* r = RELU(r_pre); NULL: RELU fused into relu_fc */
    const mg_add_params_t *add_g;         /* g = ADD(r, q)       (input1 = r, input2 = q) */
    const mg_add_params_t *sub;           /* d = SUB(g, h) */
    const mg_mul_params_t *mul;           /* m = MUL(z, d)       (input1 = z, input2 = d) */
    const mg_add_params_t *add_h;         /* h_new = ADD(h, m)   (input1 = h, input2 = m) */
} mg_mingru_params_t;

/* One step: u [depth] (the layer input), h [H] updated in place to h_new. u must not alias h. */
void mg_mingru_step_s8(const mg_mingru_params_t *p, const int8_t *u, int8_t *h);

/* The same step with an int16 state (convert/widen.py): z (or, with an int16 gate, s->sig16
 * set, its pre-activation: p->sig_z unused) and g as above, then the int16 tail of
 * mg_state16.h (p->sub, p->mul, p->add_h unused). h [H] int16 is
 * updated in place; h8 [H] receives the int8 requantized h_new (the residual's input). */
void mg_mingru_step_s16(const mg_mingru_params_t *p, const mg_state16_params_t *s,
                        const int8_t *u, int16_t *h, int8_t *h8);

#ifdef __cplusplus
}
#endif

#endif /* MG_MINGRU_H */
