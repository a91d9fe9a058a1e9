/* mg_proto.c - packet parsing/encoding and the byte-wise frame receiver (see mg_proto.h). */
#include "mg_proto.h"

#include "mg_cobs.h"
#include "mg_crc.h"

void mg_rx_init(mg_rx_t *rx)
{
    rx->n = 0u;
    rx->overflow = 0u;
}

/* Decodes the first 3 packet bytes (version, type, seq) from the start of a COBS frame that
 * may be damaged further on, so that a frame-level error can name the frame it is about.
 * Sets err->type and err->seq when they could be read, else leaves them 0. */
static void peek_header(const uint8_t *frame, size_t n, mg_proto_error_t *err)
{
    uint8_t head[3];
    size_t i = 0u, j = 0u, k;
    while (i < n && j < 3u) {
        uint8_t code = frame[i++];
        if (code == 0u) {
            return;
        }
        for (k = 1u; k < code && j < 3u; ++k) {
            if (i >= n || frame[i] == 0u) {
                return;
            }
            head[j++] = frame[i++];
        }
        if (j < 3u && code != 0xFFu) {
            if (i >= n) {
                return;          /* the last block: no implicit zero follows it */
            }
            head[j++] = 0u;
        }
    }
    if (j == 3u) {
        err->type = head[1];
        err->seq = head[2];
    }
}

mg_rx_status_t mg_proto_parse(uint8_t *frame, size_t n, mg_packet_t *pkt, mg_proto_error_t *err)
{
    size_t len = 0u;
    uint16_t crc, body_len;
    err->seq = 0u;
    err->type = 0u;
    peek_header(frame, n, err);            /* before decoding in place overwrites the frame */
    if (mg_cobs_decode(frame, n, frame, n, &len) != 0) {
        err->code = MG_E_COBS;
        return MG_RX_ERROR;
    }
    if (len < MG_PROTO_HEADER + MG_PROTO_CRC_BYTES) {
        err->code = MG_E_TRUNCATED;
        return MG_RX_ERROR;
    }
    body_len = mg_get_u16(frame + 3);
    if ((size_t)body_len + MG_PROTO_HEADER + MG_PROTO_CRC_BYTES != len) {
        /* the length field disagrees with the frame: truncated, padded or corrupt */
        err->code = MG_E_TRUNCATED;
        return MG_RX_ERROR;
    }
    crc = mg_crc16_update(MG_CRC16_INIT, frame, len - MG_PROTO_CRC_BYTES);
    if (crc != mg_get_u16(frame + len - MG_PROTO_CRC_BYTES)) {
        err->code = MG_E_CRC;
        return MG_RX_ERROR;
    }
    if (body_len > MG_PROTO_MAX_BODY) {
        /* intact, but longer than the protocol allows (241..248 bytes fit the RX buffer) */
        err->code = MG_E_OVERSIZE;
        return MG_RX_ERROR;
    }
    pkt->version = frame[0];
    pkt->type = frame[1];
    pkt->seq = frame[2];
    pkt->len = body_len;
    pkt->body = frame + MG_PROTO_HEADER;
    return MG_RX_PACKET;
}

mg_rx_status_t mg_rx_feed(mg_rx_t *rx, uint8_t byte, mg_packet_t *pkt, mg_proto_error_t *err)
{
    size_t n;
    if (byte != 0u) {
        if (rx->overflow) {
            return MG_RX_NONE;
        }
        if (rx->n >= MG_PROTO_RX_BUF) {
            rx->overflow = 1u;
            return MG_RX_NONE;
        }
        rx->buf[rx->n++] = byte;
        return MG_RX_NONE;
    }
    /* delimiter: a frame is complete */
    n = rx->n;
    rx->n = 0u;
    if (rx->overflow) {
        rx->overflow = 0u;
        err->code = MG_E_OVERSIZE;
        err->seq = 0u;
        err->type = 0u;
        peek_header(rx->buf, n, err);       /* the first MG_PROTO_RX_BUF bytes are kept */
        return MG_RX_ERROR;
    }
    if (n == 0u) {
        return MG_RX_NONE;   /* empty frame: delimiters used as padding/resync */
    }
    return mg_proto_parse(rx->buf, n, pkt, err);
}

size_t mg_proto_encode(uint8_t type, uint8_t seq, const uint8_t *body, uint16_t len,
                       uint8_t *out, size_t cap)
{
    uint8_t hdr[MG_PROTO_HEADER];
    uint16_t crc;
    size_t i, n;
    mg_cobs_enc_t e;
    if (len > MG_PROTO_MAX_BODY || cap < 2u) {
        return 0u;
    }
    hdr[0] = (uint8_t)MG_PROTO_VERSION;
    hdr[1] = type;
    hdr[2] = seq;
    mg_put_u16(hdr + 3, len);
    crc = mg_crc16_update(MG_CRC16_INIT, hdr, MG_PROTO_HEADER);
    crc = mg_crc16_update(crc, body, len);
    mg_cobs_enc_init(&e, out, cap - 1u);   /* keep one byte for the delimiter */
    for (i = 0; i < MG_PROTO_HEADER; ++i) {
        mg_cobs_enc_push(&e, hdr[i]);
    }
    for (i = 0; i < len; ++i) {
        mg_cobs_enc_push(&e, body[i]);
    }
    mg_cobs_enc_push(&e, (uint8_t)(crc & 0xFFu));
    mg_cobs_enc_push(&e, (uint8_t)(crc >> 8));
    n = mg_cobs_enc_finish(&e);
    if (n == 0u) {
        return 0u;
    }
    out[n] = 0u;
    return n + 1u;
}
