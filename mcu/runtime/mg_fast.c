/* mg_fast.c - see mg_fast.h. Every function here is checked byte for byte against the
 * reference kernels (tests/test_fast_kernels.py) and, in whole models, against TFLite-Micro. */
#include "mg_fast.h"

#include "mg_delay.h"

/* 4 input bytes as one word, bits 0-7 = x[0] (any alignment). */
static inline uint32_t load4(const int8_t *x)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t w;
    __builtin_memcpy(&w, x, 4);
    return w;
#else
    return (uint32_t)(uint8_t)x[0] | ((uint32_t)(uint8_t)x[1] << 8) |
           ((uint32_t)(uint8_t)x[2] << 16) | ((uint32_t)(uint8_t)x[3] << 24);
#endif
}

void mg_ffc_expand(const int8_t *x, int32_t depth, uint32_t *xq)
{
    int32_t k = 0;
    for (; k + 4 <= depth; k += 4) {
        const uint32_t xw = load4(x + k);
        const uint32_t p = mg_ssub16(mg_sxtb16(xw >> 8), 0x007F007Fu);  /* x1-127, x3-127 */
        xq[0] = mg_ssub16(mg_uxtb16(xw) << 8, p);                        /* 256 x0 - p0 ... */
        xq[1] = p;
        xq += 2;
    }
    if (k < depth) {   /* tail block: missing inputs read as 0 (their weights are 0) */
        int8_t t[4] = {0, 0, 0, 0};
        int32_t j;
        for (j = 0; k + j < depth; ++j) {
            t[j] = x[k + j];
        }
        {
            const uint32_t xw = (uint32_t)(uint8_t)t[0] | ((uint32_t)(uint8_t)t[1] << 8) |
                                ((uint32_t)(uint8_t)t[2] << 16) | ((uint32_t)(uint8_t)t[3] << 24);
            const uint32_t p = mg_ssub16(mg_sxtb16(xw >> 8), 0x007F007Fu);
            xq[0] = mg_ssub16(mg_uxtb16(xw) << 8, p);
            xq[1] = p;
        }
    }
}

void mg_ffc_s8(const mg_ffc_params_t *p, const int8_t *x, uint32_t *xq, int8_t *out)
{
    const int32_t groups = (p->n_out + 3) >> 2;
    const uint32_t *w = p->w;
    int32_t g, c = 0;
    mg_ffc_expand(x, p->depth, xq);
    for (g = 0; g < groups; ++g) {
        int32_t d[4];
        int32_t k;
        mg_ffc_dot4(xq, w, p->blocks, d);
        w += 4 * p->blocks;
        for (k = 0; k < 4 && c < p->n_out; ++k, ++c) {
            out[c] = mg_ffc_out1(p, d[k], c);
        }
    }
}

void mg_lut_s8(const int8_t *lut, int32_t n, const int8_t *in, int8_t *out)
{
    const int8_t *mid = lut + 128;
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mid[in[i]];
    }
}

void mg_fadd_s8(const mg_add_params_t *p, int32_t n, const int8_t *a, const int8_t *b,
                int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mg_fadd1(p, a[i], b[i]);
    }
}

void mg_fsub_s8(const mg_add_params_t *p, int32_t n, const int8_t *a, const int8_t *b,
                int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mg_fsub1(p, a[i], b[i]);
    }
}

void mg_fmul_s8(const mg_mul_params_t *p, int32_t n, const int8_t *a, const int8_t *b,
                int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = mg_fmul1(p, a[i], b[i]);
    }
}

void mg_delay_fast_s8(const mg_delay_fast_t *f, int8_t *ring, uint32_t t, const int8_t *frame,
                      int8_t *out)
{
    const mg_delay_params_t *p = f->ref;
    const int32_t H = p->channels;
    const int32_t N = p->taps;
    int32_t c, e;
    for (c = 0; c < H; ++c) {
        const uint32_t len = p->ring_len[c];
        const int32_t cur = (int32_t)frame[c];
        int32_t acc = f->bias_folded[c];
        const uint16_t *dl = p->delay + c;
        const int8_t *fl = p->filter + c;
        if (len) {
            int8_t *slots = ring + p->ring_off[c];
            const uint32_t pos = t % len;
            for (e = 0; e < N; ++e) {
                const uint32_t d = dl[e * H];
                const int32_t v = d == 0u ? cur
                                          : (int32_t)slots[pos >= d ? pos - d : pos + len - d];
                acc += (int32_t)fl[e * H] * v;
            }
            slots[pos] = frame[c];
        } else {
            for (e = 0; e < N; ++e) {
                acc += (int32_t)fl[e * H] * cur;
            }
        }
        out[c] = (int8_t)mg_fq_clamp(mg_fq_mbqm_b(acc, p->multiplier[c], (int)p->shift[c])
                                     + p->output_offset, p->act_min, p->act_max);
    }
}

void mg_mingru_fast_s8(const mg_mingru_fast_t *p, const int8_t *u, int8_t *h, uint32_t *xq)
{
    const int32_t H = p->channels;
    const int32_t blocks = p->gate->blocks;
    const int32_t groups = (H + 3) >> 2;
    const int8_t *sig_z = p->sig_z + 128;
    const int8_t *sig_q = (p->min_const ? p->sig_p : p->sig_min_p) + 128;
    const int8_t *relu = p->relu ? p->relu + 128 : (const int8_t *)0;
    const mg_ffc_params_t *rfc = p->relu_fc;
    const uint32_t *wz = p->gate->w;
    const uint32_t *wp = p->cand->w;
    const uint32_t *wr = rfc && !p->relu_fc_shares_dot ? rfc->w : (const uint32_t *)0;
    int32_t g, c = 0;
    mg_ffc_expand(u, p->gate->depth, xq);
    for (g = 0; g < groups; ++g) {
        int32_t dz[4], dp[4], dr[4];
        int32_t k;
        mg_ffc_dot4(xq, wz, blocks, dz);
        mg_ffc_dot4(xq, wp, blocks, dp);
        wz += 4 * blocks;
        wp += 4 * blocks;
        if (wr) {
            mg_ffc_dot4(xq, wr, blocks, dr);
            wr += 4 * blocks;
        }
        for (k = 0; k < 4 && c < H; ++k, ++c) {
            const int8_t z = sig_z[mg_ffc_out1(p->gate, dz[k], c)];
            const int8_t pv = mg_ffc_out1(p->cand, dp[k], c);
            int8_t r, q, gv, hc;
            if (p->min_const) {
                const int8_t mn = p->min_const[c];
                q = sig_q[pv < mn ? pv : mn];
            } else {
                q = sig_q[pv];
            }
            if (rfc == (const mg_ffc_params_t *)0) {
                r = pv;
            } else {
                r = mg_ffc_out1(rfc, wr ? dr[k] : dp[k], c);
            }
            if (relu) {
                r = relu[r];
            }
            gv = mg_fadd1(p->add_g, r, q);
            hc = h[c];
            h[c] = mg_fadd1(p->add_h, hc, mg_fmul1(p->mul, z, mg_fsub1(p->sub, gv, hc)));
        }
    }
}
