/* mg_mingru.c - see mg_mingru.h. Per-element arithmetic from mg_elem.h (the same functions the
 * array kernels in mg_kernels.c use), one channel at a time. */
#include "mg_mingru.h"

#include "mg_elem.h"
#include "mg_state16.h"

/* FULLY_CONNECTED output channel c of a fused projection, bias and requantization included. */
static int8_t fc_out(const MG_ROM mg_mingru_fc_t *f, int32_t dot, int32_t c)
{
    return mg_fc_out1(f->fc, f->bias ? dot + f->bias[c] : dot, c);
}

static int32_t fc_dot(const MG_ROM mg_mingru_fc_t *f, const int8_t *u, int32_t c)
{
    return mg_fc_dot1(f->fc, u, f->weights + c * f->fc->accum_depth);
}

/* The candidate g = RELU-part + sigmoid(MINIMUM(p, c)) of channel c from the int8 FC outputs
 * p8 and r8 (r8 = p8 when the graph has no separate RELU FC). */
static int8_t g1(const MG_ROM mg_mingru_params_t *p, int32_t c, int8_t pv, int8_t r)
{
    const int8_t mn = p->min_const[c * p->min_stride];
    const int8_t q = mg_logistic1_s8(p->sig_p, pv < mn ? pv : mn);
    if (p->relu != NULL) {
        r = mg_requant1_s8(p->relu, r);
    }
    return mg_add1_s8(p->add_g, r, q);
}

/* Gate z (int8; its pre-activation z_pre when gate_pre) and candidate g of channel c, the
 * part both state widths share. */
static void zg1(const MG_ROM mg_mingru_params_t *p, const int8_t *u, int32_t c, int gate_pre,
                int8_t *z_out, int8_t *g_out)
{
    const int8_t zp = fc_out(&p->gate, fc_dot(&p->gate, u, c), c);
    const int8_t z = gate_pre ? zp : mg_logistic1_s8(p->sig_z, zp);
    const int32_t dot_p = fc_dot(&p->cand, u, c);
    const int8_t pv = fc_out(&p->cand, dot_p, c);
    int8_t r = pv;
    if (p->relu_fc.fc != NULL) {
        const int32_t dot_r = p->relu_fc_shares_dot ? dot_p : fc_dot(&p->relu_fc, u, c);
        r = fc_out(&p->relu_fc, dot_r, c);
    }
    *z_out = z;
    *g_out = g1(p, c, pv, r);
}

void mg_mingru_step_s8(const MG_ROM mg_mingru_params_t *p, const int8_t *u, int8_t *h)
{
    int32_t c;
    for (c = 0; c < p->channels; ++c) {
        int8_t z;
        int8_t g;
        zg1(p, u, c, 0, &z, &g);
        h[c] = mg_add1_s8(p->add_h, h[c], mg_mul1_s8(p->mul, z, mg_sub1_s8(p->sub, g, h[c])));
    }
}

void mg_mingru_step_s16(const MG_ROM mg_mingru_params_t *p, const MG_ROM mg_state16_params_t *s,
                        const int8_t *u, int16_t *h, int8_t *h8)
{
    const int gate_pre = mg_rom_nonnull(s->sig16);
    int32_t c;
    for (c = 0; c < p->channels; ++c) {
        int8_t z;
        int8_t g;
        zg1(p, u, c, gate_pre, &z, &g);
        h[c] = mg_state16_update1(s, z, g, h[c], &h8[c]);
    }
}

void mg_input16_front(const MG_ROM mg_input16_params_t *q, int32_t n, const int8_t *frame,
                      const int8_t *conv, int16_t *u16)
{
    int32_t c;
    for (c = 0; c < n; ++c) {
        u16[c] = mg_add1_s16(q->add_u, (int16_t)mg_requant32(q->frame16, frame[c]),
                             (int16_t)mg_requant32(q->conv16, conv[c]));
    }
}

/* A 16x8 FC output channel c (int16, clamped to the FC's activation range). */
static int32_t fc16_out(const MG_ROM mg_mingru_fc_t *f, int32_t dot, int32_t c)
{
    return mg_fc_out32(f->fc, f->bias ? dot + f->bias[c] : dot, c);
}

static int32_t fc16_dot(const MG_ROM mg_mingru_fc_t *f, const int16_t *u, int32_t c)
{
    return mg_fc_dot1_s16(f->fc, u, f->weights + c * f->fc->accum_depth);
}

void mg_mingru_step_u16(const MG_ROM mg_mingru_params_t *p, const MG_ROM mg_state16_params_t *s,
                        const MG_ROM mg_input16_params_t *q, const int16_t *u16, int16_t *h, int8_t *h8,
                        int8_t *v8)
{
    int32_t c;
    for (c = 0; c < p->channels; ++c) {
        const int16_t zp = (int16_t)fc16_out(&q->gate, fc16_dot(&q->gate, u16, c), c);
        const int16_t z16 = mg_logistic1_s16(s->sig16, zp);
        const int32_t dot_p = fc16_dot(&q->cand, u16, c);
        const int8_t pv = (int8_t)mg_requant32(q->p8, fc16_out(&q->cand, dot_p, c));
        int8_t r = pv;
        if (q->relu_fc.fc != NULL) {
            const int32_t dot_r = p->relu_fc_shares_dot ? dot_p : fc16_dot(&q->relu_fc, u16, c);
            r = (int8_t)mg_requant32(q->r8, fc16_out(&q->relu_fc, dot_r, c));
        }
        h[c] = mg_state16_update_z16(s, z16, g1(p, c, pv, r), h[c], &h8[c]);
        v8[c] = (int8_t)mg_requant32(q->v8, mg_add1_s16(q->add_v, u16[c], h[c]));
    }
}
