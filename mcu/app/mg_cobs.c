/* mg_cobs.c - COBS encoder/decoder (see mg_cobs.h). */
#include "mg_cobs.h"

void mg_cobs_enc_init(mg_cobs_enc_t *e, uint8_t *dst, size_t cap)
{
    e->dst = dst;
    e->cap = cap;
    e->code_pos = 0u;     /* slot 0 is reserved for the first code byte */
    e->pos = 1u;
    e->code = 1u;
    e->after_full = 0u;
    e->error = 0u;
}

/* Writes the current block's code byte and reserves a slot for the next one. The slot is
 * only checked against cap when something is written to it. */
static void enc_close_block(mg_cobs_enc_t *e, uint8_t full)
{
    if (e->code_pos >= e->cap) {
        e->error = 1u;
        return;
    }
    e->dst[e->code_pos] = e->code;
    e->code_pos = e->pos;
    e->pos += 1u;
    e->code = 1u;
    e->after_full = full;
}

void mg_cobs_enc_push(mg_cobs_enc_t *e, uint8_t byte)
{
    if (e->error) {
        return;
    }
    if (byte == 0u) {
        enc_close_block(e, 0u);
        return;
    }
    if (e->pos >= e->cap) {
        e->error = 1u;
        return;
    }
    e->dst[e->pos++] = byte;
    e->code++;
    e->after_full = 0u;
    if (e->code == 0xFFu) {
        enc_close_block(e, 1u);
    }
}

size_t mg_cobs_enc_finish(mg_cobs_enc_t *e)
{
    if (e->error) {
        return 0u;
    }
    if (e->code == 1u && e->after_full) {
        /* the input ended right after a full block: drop the empty block (minimal form) */
        return e->pos - 1u;
    }
    if (e->code_pos >= e->cap) {
        e->error = 1u;
        return 0u;
    }
    e->dst[e->code_pos] = e->code;
    return e->pos;
}

size_t mg_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
    mg_cobs_enc_t e;
    size_t i;
    mg_cobs_enc_init(&e, dst, cap);
    for (i = 0; i < n && !e.error; ++i) {
        mg_cobs_enc_push(&e, src[i]);
    }
    return mg_cobs_enc_finish(&e);
}

int mg_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len)
{
    size_t i = 0u, j = 0u, k;
    uint8_t code;
    if (n == 0u) {
        return -1;
    }
    while (i < n) {
        code = src[i++];
        if (code == 0u) {
            return -1;
        }
        if ((size_t)(code - 1u) > n - i) {
            return -1;    /* the block runs past the end: truncated */
        }
        for (k = 1u; k < code; ++k) {
            uint8_t b = src[i++];
            if (b == 0u || j >= cap) {
                return -1;
            }
            dst[j++] = b;   /* j < i always, so in-place decoding is safe */
        }
        if (code != 0xFFu && i < n) {
            if (j >= cap) {
                return -1;
            }
            dst[j++] = 0u;
        }
    }
    *out_len = j;
    return 0;
}
