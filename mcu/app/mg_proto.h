/* mg_proto.h - the mgrade-edge serial protocol: packet format, framing and the byte-wise
 * receiver. No board dependency (fuzzed on the host). Specification: docs/protocol.md.
 *
 * Packet (little-endian):  version u8 | type u8 | seq u8 | len u16 | body[len] | crc16 u16
 * crc16 = CRC-16/CCITT-FALSE over version..body. On the wire: COBS(packet) 0x00.
 */
#ifndef MG_PROTO_H
#define MG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_PROTO_VERSION     1u
#define MG_PROTO_HEADER      5u
#define MG_PROTO_CRC_BYTES   2u
#define MG_PROTO_MAX_BODY    240u
#define MG_PROTO_MAX_PACKET  (MG_PROTO_HEADER + MG_PROTO_MAX_BODY + MG_PROTO_CRC_BYTES) /* 247 */
/* COBS(247 bytes) <= 248 bytes, plus the 0x00 delimiter */
#define MG_PROTO_MAX_WIRE    (MG_PROTO_MAX_PACKET + 2u)                                   /* 249 */
#define MG_PROTO_RX_BUF      256u   /* encoded bytes buffered until a delimiter */

/* message types: requests (host -> device) */
#define MG_T_HELLO       0x01u
#define MG_T_RESET       0x02u
#define MG_T_STEP        0x03u
#define MG_T_RUN_BEGIN   0x04u
#define MG_T_RUN_CHUNK   0x05u
#define MG_T_RUN_END     0x06u
#define MG_T_REPLY       0x80u   /* a reply's type is request type | 0x80 */
#define MG_T_BOOT        0xFEu   /* unsolicited, sent once when the firmware starts (seq 0) */
#define MG_T_ERROR       0xFFu

/* RUN_BEGIN flags */
#define MG_RUN_F_STEP_LOGITS 0x01u  /* RUN_CHUNK replies carry every step's int8 logits */

/* error codes (ERROR body: code u8 | request type u8 | detail u32) */
#define MG_E_CRC          1u   /* frame-level: CRC mismatch */
#define MG_E_COBS         2u   /* frame-level: invalid COBS encoding */
#define MG_E_TRUNCATED    3u   /* frame-level: shorter than header + CRC, or len disagrees */
#define MG_E_OVERSIZE     4u   /* frame-level: more than MG_PROTO_RX_BUF bytes before 0x00, or
                                  a body longer than MG_PROTO_MAX_BODY (detail: the limit) */
#define MG_E_VERSION      5u   /* unsupported protocol version (detail: supported version) */
#define MG_E_UNKNOWN_TYPE 6u
#define MG_E_BAD_LENGTH   7u   /* body length invalid for the type (detail: expected or n_in) */
#define MG_E_BAD_OFFSET   8u   /* step index != device step count (detail: device step count) */
#define MG_E_TOO_LARGE    9u   /* the reply would exceed MG_PROTO_MAX_BODY */

typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t seq;
    uint16_t len;            /* <= MG_PROTO_MAX_BODY */
    const uint8_t *body;     /* points into the receiver's buffer; valid until the next feed */
} mg_packet_t;

typedef struct {
    uint8_t code;    /* MG_E_* */
    uint8_t seq;     /* the frame's seq byte if it could be read, else 0; unverified for
                      * frame-level errors (read from the intact start of a damaged frame) */
    uint8_t type;    /* the frame's type byte if it could be read, else 0 */
} mg_proto_error_t;

typedef enum { MG_RX_NONE = 0, MG_RX_PACKET = 1, MG_RX_ERROR = 2 } mg_rx_status_t;

typedef struct {
    uint8_t buf[MG_PROTO_RX_BUF];
    uint16_t n;
    uint8_t overflow;        /* dropping bytes until the next delimiter */
} mg_rx_t;

void mg_rx_init(mg_rx_t *rx);
/* Feed one received byte. Returns MG_RX_PACKET when a delimiter completed a valid packet
 * (*pkt filled), MG_RX_ERROR when it completed a bad frame (*err filled), MG_RX_NONE
 * otherwise (including empty frames, i.e. repeated delimiters). */
mg_rx_status_t mg_rx_feed(mg_rx_t *rx, uint8_t byte, mg_packet_t *pkt, mg_proto_error_t *err);

/* Parse one COBS-encoded frame (no delimiter), decoding it in place. Returns MG_RX_PACKET
 * or MG_RX_ERROR; the version is not checked here (the application answers MG_E_VERSION). */
mg_rx_status_t mg_proto_parse(uint8_t *frame, size_t n, mg_packet_t *pkt, mg_proto_error_t *err);

/* Build a packet and write COBS(packet) + 0x00 into out. Returns the bytes written, or 0 if
 * len > MG_PROTO_MAX_BODY or cap is too small (cap >= MG_PROTO_MAX_WIRE always suffices). */
size_t mg_proto_encode(uint8_t type, uint8_t seq, const uint8_t *body, uint16_t len,
                       uint8_t *out, size_t cap);

/* little-endian field helpers */
static inline uint16_t mg_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((unsigned)p[1] << 8)); }
static inline uint32_t mg_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void mg_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void mg_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

#ifdef __cplusplus
}
#endif

#endif /* MG_PROTO_H */
