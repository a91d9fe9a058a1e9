/* mg_mingru.c - see mg_mingru.h. Per-element arithmetic as in mg_kernels.c (TFLM reference
 * integer kernels), one channel at a time. */
#include "mg_mingru.h"

#include "mg_quant.h"

static int32_t clamp32(int32_t v, int32_t lo, int32_t hi)
{
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return v;
}

/* The FULLY_CONNECTED accumulator of output channel c, without the bias. */
static int32_t fc_dot(const mg_mingru_fc_t *f, const int8_t *u, int32_t c)
{
    const mg_fc_params_t *p = f->fc;
    const int8_t *w = f->weights + c * p->accum_depth;
    int32_t acc = 0;
    int32_t d;
    if (p->per_channel) {
        for (d = 0; d < p->accum_depth; ++d) {
            acc += (int32_t)w[d] * ((int32_t)u[d] + p->input_offset);
        }
    } else {
        for (d = 0; d < p->accum_depth; ++d) {
            acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)u[d] + p->input_offset);
        }
    }
    return acc;
}

/* bias, requantization and activation clamp of output channel c */
static int8_t fc_finish(const mg_mingru_fc_t *f, int32_t acc, int32_t c)
{
    const mg_fc_params_t *p = f->fc;
    const int32_t m = p->per_channel ? p->multiplier[c] : p->multiplier[0];
    const int32_t s = p->per_channel ? p->shift[c] : p->shift[0];
    if (f->bias) {
        acc += f->bias[c];
    }
    acc = mg_mbqm(acc, m, (int)s) + p->output_offset;
    return (int8_t)clamp32(acc, p->act_min, p->act_max);
}

static int8_t logistic1(const mg_logistic_params_t *p, int8_t in)
{
    const int32_t x = (int32_t)in - p->input_zero_point;
    int32_t y;
    if (x <= -p->input_range_radius) {
        return -128;
    }
    if (x >= p->input_range_radius) {
        return 127;
    }
    y = mg_rdbpot(mg_logistic_q4(mg_mbqm(x, p->input_multiplier, (int)p->input_left_shift)),
                  31 - 8) - 128;
    return (int8_t)clamp32(y, -128, 127);
}

static int8_t requant1(const mg_requant_params_t *p, int8_t in)
{
    const int32_t v = p->output_offset
                      + mg_mbqm((int32_t)in - p->input_offset, p->multiplier, (int)p->shift);
    return (int8_t)clamp32(v, p->act_min, p->act_max);
}

static int32_t add_scaled(const mg_add_params_t *p, int8_t x, int32_t offset, int32_t mult,
                          int32_t shift)
{
    const int32_t v = (offset + (int32_t)x) * ((int32_t)1 << p->left_shift);
    return mg_mbqm_smaller_than_one(v, mult, (int)shift);
}

static int8_t add_finish(const mg_add_params_t *p, int32_t raw)
{
    const int32_t out = mg_mbqm_smaller_than_one(raw, p->output_multiplier, (int)p->output_shift)
                        + p->output_offset;
    return (int8_t)clamp32(out, p->act_min, p->act_max);
}

static int8_t add1(const mg_add_params_t *p, int8_t a, int8_t b)
{
    return add_finish(p, add_scaled(p, a, p->input1_offset, p->input1_multiplier,
                                    p->input1_shift)
                         + add_scaled(p, b, p->input2_offset, p->input2_multiplier,
                                      p->input2_shift));
}

static int8_t sub1(const mg_add_params_t *p, int8_t a, int8_t b)
{
    return add_finish(p, add_scaled(p, a, p->input1_offset, p->input1_multiplier,
                                    p->input1_shift)
                         - add_scaled(p, b, p->input2_offset, p->input2_multiplier,
                                      p->input2_shift));
}

static int8_t mul1(const mg_mul_params_t *p, int8_t a, int8_t b)
{
    const int32_t v1 = p->input1_offset + (int32_t)a;
    const int32_t v2 = p->input2_offset + (int32_t)b;
    const int32_t out = p->output_offset
                        + mg_mbqm(v1 * v2, p->output_multiplier, (int)p->output_shift);
    return (int8_t)clamp32(out, p->act_min, p->act_max);
}

void mg_mingru_step_s8(const mg_mingru_params_t *p, const int8_t *u, int8_t *h)
{
    int32_t c;
    for (c = 0; c < p->channels; ++c) {
        const int8_t z = logistic1(p->sig_z, fc_finish(&p->gate, fc_dot(&p->gate, u, c), c));
        const int32_t dot_p = fc_dot(&p->cand, u, c);
        const int8_t pv = fc_finish(&p->cand, dot_p, c);
        const int8_t mn = p->min_const[c * p->min_stride];
        const int8_t q = logistic1(p->sig_p, pv < mn ? pv : mn);
        int8_t r;
        int8_t g;
        if (p->relu_fc.fc == NULL) {
            r = pv;
        } else {
            const int32_t dot_r = p->relu_fc_shares_dot ? dot_p : fc_dot(&p->relu_fc, u, c);
            r = fc_finish(&p->relu_fc, dot_r, c);
        }
        if (p->relu != NULL) {
            r = requant1(p->relu, r);
        }
        g = add1(p->add_g, r, q);
        h[c] = add1(p->add_h, h[c], mul1(p->mul, z, sub1(p->sub, g, h[c])));
    }
}
