/* mg_cobs.h - Consistent Overhead Byte Stuffing (COBS) for 0x00-delimited frames.
 *
 * An encoded block never contains 0x00, so 0x00 can delimit frames on a byte stream.
 * Encoding n bytes yields at most n + n/254 + 1 bytes (the delimiter is not included).
 * A run of exactly 254 non-zero bytes at the end is encoded without a trailing 0x01 code
 * (the minimal form); the decoder accepts both forms.
 */
#ifndef MG_COBS_H
#define MG_COBS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

/* Streaming encoder: writes into dst[0..cap). */
typedef struct {
    uint8_t *dst;
    size_t cap;
    size_t pos;       /* next free byte in dst */
    size_t code_pos;  /* where the current block's code byte goes */
    uint8_t code;     /* 1 + number of data bytes in the current block */
    uint8_t after_full; /* the previous block was a full 254-byte block (no implied zero) */
    uint8_t error;    /* set when dst was too small */
} mg_cobs_enc_t;

void mg_cobs_enc_init(mg_cobs_enc_t *e, uint8_t *dst, size_t cap);
void mg_cobs_enc_push(mg_cobs_enc_t *e, uint8_t byte);
/* Closes the last block; returns the encoded length (without delimiter), 0 on overflow. */
size_t mg_cobs_enc_finish(mg_cobs_enc_t *e);

/* One-shot encode; returns the encoded length (>= 1), or 0 if cap is too small. */
size_t mg_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap);

/* Decode one encoded block (without delimiter). dst may equal src (in-place decoding).
 * Returns 0 and sets *out_len on success; -1 on malformed input (a 0x00 byte, a code that
 * runs past the end) or if the result does not fit in cap. */
int mg_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* MG_COBS_H */
