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
    const MG_ROM mg_fc_params_t *fc;    /* output_depth = H, accum_depth = depth of u, batches = 1 */
    const MG_ROM int8_t *weights;       /* [H, depth] */
    const MG_ROM int32_t *bias;         /* [H] or NULL */
} mg_mingru_fc_t;

typedef struct {
    int32_t channels;                     /* H */
    mg_mingru_fc_t gate;                  /* z_pre = FC_z(u) */
    const MG_ROM mg_logistic_params_t *sig_z;    /* z = LOGISTIC(z_pre) */
    mg_mingru_fc_t cand;                  /* p = FC_h(u) (no activation) */
    const MG_ROM int8_t *min_const;              /* MINIMUM(p, min_const[c * min_stride]) */
    int32_t min_stride;                   /* 0: scalar constant, 1: per channel */
    const MG_ROM mg_logistic_params_t *sig_p;    /* q = LOGISTIC(MINIMUM(p, .)) */
    mg_mingru_fc_t relu_fc;               /* r_pre = FC(u); fc == NULL: r_pre = p */
    int32_t relu_fc_shares_dot;           /* relu_fc has cand's weights, input and offsets */
    const MG_ROM mg_requant_params_t *relu;      /* r = RELU(r_pre); NULL: RELU fused into relu_fc */
    const MG_ROM mg_add_params_t *add_g;         /* g = ADD(r, q)       (input1 = r, input2 = q) */
    const MG_ROM mg_add_params_t *sub;           /* d = SUB(g, h) */
    const MG_ROM mg_mul_params_t *mul;           /* m = MUL(z, d)       (input1 = z, input2 = d) */
    const MG_ROM mg_add_params_t *add_h;         /* h_new = ADD(h, m)   (input1 = h, input2 = m) */
} mg_mingru_params_t;

/* One step: u [depth] (the layer input), h [H] updated in place to h_new. u must not alias h. */
void mg_mingru_step_s8(const MG_ROM mg_mingru_params_t *p, const int8_t *u, int8_t *h);

/* The same step with an int16 state (convert/widen.py): z (or, with an int16 gate, s->sig16
 * set, its pre-activation: p->sig_z unused) and g as above, then the int16 tail of
 * mg_state16.h (p->sub, p->mul, p->add_h unused). h [H] int16 is
 * updated in place; h8 [H] receives the int8 requantized h_new (the residual's input). */
void mg_mingru_step_s16(const MG_ROM mg_mingru_params_t *p, const MG_ROM mg_state16_params_t *s,
                        const int8_t *u, int16_t *h, int8_t *h8);

/* The minGRU input u in int16 (convert/widen.py widen_input, `convert --input-bits 16`): u16 is
 * the residual sum of the layer's frame and its delay conv output, each requantized to int16,
 * and the gate and candidate FULLY_CONNECTED run in 16x8 mode on it (same int8 weights, int32
 * biases on u16's scale, int16 outputs); the candidate's outputs are requantized to int8 and
 * go on as in mg_mingru_step_s16, the gate's feeds the int16 LOGISTIC directly. */
typedef struct {
    const MG_ROM mg_requant_params_t *frame16;   /* f16 = QUANTIZE(frame8)       int8 -> int16 */
    const MG_ROM mg_requant_params_t *conv16;    /* c16 = QUANTIZE(conv8) */
    const MG_ROM mg_add_params_t *add_u;         /* u16 = ADD(f16, c16)           (left_shift 15) */
    mg_mingru_fc_t gate;                  /* z_pre16 = FC(u16) */
    mg_mingru_fc_t cand;                  /* p16 = FC(u16) */
    mg_mingru_fc_t relu_fc;               /* r16 = FC(u16) + RELU; fc == NULL: r8 = p8 */
    const MG_ROM mg_requant_params_t *p8;        /* p8 = QUANTIZE(p16)            int16 -> int8 */
    const MG_ROM mg_requant_params_t *r8;        /* r8 = QUANTIZE(r16); NULL without relu_fc */
    const MG_ROM mg_add_params_t *add_v;         /* v16 = ADD(u16, h16')          (input1 = u16) */
    const MG_ROM mg_requant_params_t *v8;        /* v8 = QUANTIZE(v16): the layer's residual output */
} mg_input16_params_t;

/* u16[c] for c < n from the layer's frame and delay conv output (both int8 [n]). */
void mg_input16_front(const MG_ROM mg_input16_params_t *q, int32_t n, const int8_t *frame,
                      const int8_t *conv, int16_t *u16);

/* One step with the int16 state and an int16 input u16 [H] (mg_input16_front): p gives
 * the candidate's int8 part (MINIMUM, LOGISTIC, RELU op, ADD; its FC entries are not used),
 * s the int16 tail (s->sig16 the gate's LOGISTIC), q the 16x8 FCs and the residual. h [H]
 * int16 updated in place; h8 [H] receives the int8 requantized h_new, v8 [H] the layer's
 * output QUANTIZE(ADD(u16, h_new)). */
void mg_mingru_step_u16(const MG_ROM mg_mingru_params_t *p, const MG_ROM mg_state16_params_t *s,
                        const MG_ROM mg_input16_params_t *q, const int16_t *u16, int16_t *h, int8_t *h8,
                        int8_t *v8);

#ifdef __cplusplus
}
#endif

#endif /* MG_MINGRU_H */
