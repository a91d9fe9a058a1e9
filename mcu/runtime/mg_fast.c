/* mg_fast.c - see mg_fast.h. Every function here is checked byte for byte against the
 * reference kernels (tests/test_fast_kernels.py) and, in whole models, against TFLite-Micro. */
#include "mg_fast.h"

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

void mg_ffc_dot(const uint32_t *xq0, const uint32_t *wp, int32_t blocks, int32_t groups,
                int32_t *d)
{
    for (; groups > 0; --groups, d += 4) {
    const uint32_t *xq = xq0;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int32_t k;
    for (k = blocks >> 1; k > 0; --k) {       /* two blocks (8 inputs x 4 channels) a turn */
        uint32_t r = xq[0], pp = xq[1];
        uint32_t w0 = wp[0], w1 = wp[1], w2 = wp[2], w3 = wp[3];
        a0 = mg_smlad(mg_sxtb16(w0), r, mg_smlad(w0, pp, a0));
        a1 = mg_smlad(mg_sxtb16(w1), r, mg_smlad(w1, pp, a1));
        a2 = mg_smlad(mg_sxtb16(w2), r, mg_smlad(w2, pp, a2));
        a3 = mg_smlad(mg_sxtb16(w3), r, mg_smlad(w3, pp, a3));
        r = xq[2];
        pp = xq[3];
        w0 = wp[4];
        w1 = wp[5];
        w2 = wp[6];
        w3 = wp[7];
        a0 = mg_smlad(mg_sxtb16(w0), r, mg_smlad(w0, pp, a0));
        a1 = mg_smlad(mg_sxtb16(w1), r, mg_smlad(w1, pp, a1));
        a2 = mg_smlad(mg_sxtb16(w2), r, mg_smlad(w2, pp, a2));
        a3 = mg_smlad(mg_sxtb16(w3), r, mg_smlad(w3, pp, a3));
        xq += 4;
        wp += 8;
    }
    if (blocks & 1) {
        const uint32_t r = xq[0], pp = xq[1];
        const uint32_t w0 = wp[0], w1 = wp[1], w2 = wp[2], w3 = wp[3];
        a0 = mg_smlad(mg_sxtb16(w0), r, mg_smlad(w0, pp, a0));
        a1 = mg_smlad(mg_sxtb16(w1), r, mg_smlad(w1, pp, a1));
        a2 = mg_smlad(mg_sxtb16(w2), r, mg_smlad(w2, pp, a2));
        a3 = mg_smlad(mg_sxtb16(w3), r, mg_smlad(w3, pp, a3));
        wp += 4;
    }
    d[0] = a0 >> 8;     /* exact: 256 * |dot| < 2^31 (generator-checked) */
    d[1] = a1 >> 8;
    d[2] = a2 >> 8;
    d[3] = a3 >> 8;
    }
}
