/* mg_mingru.c - see mg_mingru.h. Per-element arithmetic from mg_elem.h (the same functions the
 * array kernels in mg_kernels.c use), one channel at a time. */
#include "mg_mingru.h"

#include "mg_elem.h"
#include "mg_state16.h"

/* FULLY_CONNECTED output channel c of a fused projection, bias and requantization included. */
static int8_t fc_out(const mg_mingru_fc_t *f, int32_t dot, int32_t c)
{
    return mg_fc_out1(f->fc, f->bias ? dot + f->bias[c] : dot, c);
}

static int32_t fc_dot(const mg_mingru_fc_t *f, const int8_t *u, int32_t c)
{
    return mg_fc_dot1(f->fc, u, f->weights + c * f->fc->accum_depth);
}

/* Gate z (int8; its pre-activation z_pre when gate_pre) and candidate g of channel c, the
 * part both state widths share. */
static void zg1(const mg_mingru_params_t *p, const int8_t *u, int32_t c, int gate_pre,
                int8_t *z_out, int8_t *g_out)
{
    const int8_t zp = fc_out(&p->gate, fc_dot(&p->gate, u, c), c);
    const int8_t z = gate_pre ? zp : mg_logistic1_s8(p->sig_z, zp);
    const int32_t dot_p = fc_dot(&p->cand, u, c);
    const int8_t pv = fc_out(&p->cand, dot_p, c);
    const int8_t mn = p->min_const[c * p->min_stride];
    const int8_t q = mg_logistic1_s8(p->sig_p, pv < mn ? pv : mn);
    int8_t r;
    if (p->relu_fc.fc == NULL) {
        r = pv;
    } else {
        const int32_t dot_r = p->relu_fc_shares_dot ? dot_p : fc_dot(&p->relu_fc, u, c);
        r = fc_out(&p->relu_fc, dot_r, c);
    }
    if (p->relu != NULL) {
        r = mg_requant1_s8(p->relu, r);
    }
    *z_out = z;
    *g_out = mg_add1_s8(p->add_g, r, q);
}

void mg_mingru_step_s8(const mg_mingru_params_t *p, const int8_t *u, int8_t *h)
{
    int32_t c;
    for (c = 0; c < p->channels; ++c) {
        int8_t z;
        int8_t g;
        zg1(p, u, c, 0, &z, &g);
        h[c] = mg_add1_s8(p->add_h, h[c], mg_mul1_s8(p->mul, z, mg_sub1_s8(p->sub, g, h[c])));
    }
}

void mg_mingru_step_s16(const mg_mingru_params_t *p, const mg_state16_params_t *s,
                        const int8_t *u, int16_t *h, int8_t *h8)
{
    int32_t c;
    for (c = 0; c < p->channels; ++c) {
        int8_t z;
        int8_t g;
        zg1(p, u, c, s->sig16 != 0, &z, &g);
        h[c] = mg_state16_update1(s, z, g, h[c], &h8[c]);
    }
}
