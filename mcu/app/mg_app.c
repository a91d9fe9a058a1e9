/* mg_app.c - request dispatcher of the serial protocol (docs/protocol.md).
 *
 * State: one model instance (mg_model.h; its type from the package's mg_model_data.h), the number of steps since the last reset, the exact int32
 * sum of every step's int8 logits (the mean readout without the division), the last step's
 * logits and the board ticks spent inside the model steps. Stepping requests carry the
 * step index they expect, which makes every request idempotent: a retransmitted STEP or
 * RUN_CHUNK that was already executed is answered from a one-entry reply cache. Only a true
 * retransmission hits the cache (the same type, seq and body bytes as the request just
 * executed); any other request at that step index gets BAD_OFFSET, never another's reply.
 */
#include "mg_app.h"

#include <stddef.h>
#include <string.h>

#include "mg_board.h"
#include "mg_model.h"
#include "mg_model_data.h"
#include "mg_proto.h"

#define NAME_MAX_BYTES 64u

static mg_model_t model;                /* the stream's model state */
static mg_rx_t rx;
static uint8_t tx_wire[MG_PROTO_MAX_WIRE];
static uint8_t reply[MG_PROTO_MAX_BODY];

static int32_t sums[MG_APP_MAX_OUT];
static int8_t last_logits[MG_APP_MAX_OUT];
static uint32_t steps;
static uint32_t ticks_lo, ticks_hi;    /* 64-bit tick total inside model steps */
static uint8_t run_flags;

/* one-entry cache of the last stepping reply (STEP or RUN_CHUNK) and of its request's identity */
static uint8_t cache_type;              /* 0: empty */
static uint8_t cache_seq;               /* the request's seq and body (t and frames) */
static uint16_t cache_req_len;
static uint8_t cache_req[MG_PROTO_MAX_BODY];
static uint32_t cache_end;              /* device step count after that request */
static uint16_t cache_len;
static uint8_t cache_body[MG_PROTO_MAX_BODY];

static void send_packet(uint8_t type, uint8_t seq, const uint8_t *body, uint16_t len)
{
    size_t i, n = mg_proto_encode(type, seq, body, len, tx_wire, sizeof tx_wire);
    board_uart_putc(0u);   /* a leading delimiter ends any line noise before the frame */
    for (i = 0; i < n; ++i) {
        board_uart_putc(tx_wire[i]);
    }
    board_uart_flush();
}

static void send_error(uint8_t seq, uint8_t code, uint8_t req_type, uint32_t detail)
{
    uint8_t body[6];
    body[0] = code;
    body[1] = req_type;
    mg_put_u32(body + 2, detail);
    send_packet(MG_T_ERROR, seq, body, (uint16_t)sizeof body);
}

static void add_ticks(uint32_t dt)
{
    uint32_t lo = ticks_lo + dt;
    if (lo < ticks_lo) {
        ticks_hi++;
    }
    ticks_lo = lo;
}

static void reset_state(void)
{
    uint16_t i, n = mg_model_info()->n_out;
    mg_model_init(&model);
    for (i = 0; i < n && i < MG_APP_MAX_OUT; ++i) {
        sums[i] = 0;
        last_logits[i] = 0;
    }
    steps = 0u;
    ticks_lo = 0u;
    ticks_hi = 0u;
    run_flags = 0u;
    cache_type = 0u;
}

/* one model step; accumulates the readout sum and keeps the logits */
static void model_step(const int8_t *x, uint16_t n_out)
{
    uint16_t i;
    mg_model_step(&model, x, last_logits);
    for (i = 0; i < n_out; ++i) {
        sums[i] += last_logits[i];
    }
    steps++;
}

static uint16_t put_name(uint8_t *p, const char *s)
{
    uint16_t n = 0u;
    if (s != NULL) {
        while (s[n] != '\0' && n < NAME_MAX_BYTES) {
            p[1u + n] = (uint8_t)s[n];
            n++;
        }
    }
    p[0] = (uint8_t)n;
    return (uint16_t)(n + 1u);
}

static void handle_hello(const mg_packet_t *p)
{
    const mg_model_info_t *info = mg_model_info();
    uint16_t n = 0u, i;
    reply[n++] = (uint8_t)MG_PROTO_VERSION;
    reply[n++] = (uint8_t)board_tick_unit.kind;
    mg_put_u16(reply + n, (uint16_t)MG_PROTO_MAX_BODY); n += 2u;
    mg_put_u32(reply + n, board_tick_unit.units_per_tick); n += 4u;
    for (i = 0; i < 8u; ++i) {
        reply[n++] = info->id[i];
    }
    mg_put_u16(reply + n, info->n_in); n += 2u;
    mg_put_u16(reply + n, info->n_out); n += 2u;
    mg_put_u32(reply + n, info->n_macs_per_step); n += 4u;
    mg_put_u16(reply + n, (uint16_t)MG_PROTO_RX_BUF); n += 2u;
    n = (uint16_t)(n + put_name(reply + n, board_name()));
    n = (uint16_t)(n + put_name(reply + n, info->name));
    send_packet((uint8_t)(MG_T_HELLO | MG_T_REPLY), p->seq, reply, n);
}

/* Shared by STEP (k = 1, logits always returned) and RUN_CHUNK (k >= 1 frames). */
static void handle_steps(const mg_packet_t *p, uint8_t with_logits)
{
    const mg_model_info_t *info = mg_model_info();
    uint16_t n_in = info->n_in, n_out = info->n_out, k, j, i, n;
    uint32_t offset, t0, t1;
    uint8_t *out = cache_body;

    if (p->len < 4u || n_in == 0u || (p->len - 4u) % n_in != 0u || p->len == 4u) {
        send_error(p->seq, MG_E_BAD_LENGTH, p->type, n_in);
        return;
    }
    k = (uint16_t)((p->len - 4u) / n_in);
    if (p->type == MG_T_STEP && k != 1u) {
        send_error(p->seq, MG_E_BAD_LENGTH, p->type, n_in);
        return;
    }
    if (n_out > MG_APP_MAX_OUT ||
        (with_logits && 4u + (uint32_t)k * n_out > MG_PROTO_MAX_BODY)) {
        send_error(p->seq, MG_E_TOO_LARGE, p->type, n_out);
        return;
    }
    offset = mg_get_u32(p->body);
    if (cache_type == p->type && p->seq == cache_seq && p->len == cache_req_len &&
        steps == cache_end && memcmp(p->body, cache_req, p->len) == 0) {
        /* a retransmission of the request just executed (same bytes): answer it again */
        send_packet((uint8_t)(p->type | MG_T_REPLY), p->seq, cache_body, cache_len);
        return;
    }
    if (offset != steps) {
        send_error(p->seq, MG_E_BAD_OFFSET, p->type, steps);
        return;
    }
    n = 4u;
    /* start on a tick edge: with a coarse counter (QEMU: 40 instructions per tick) the
     * measured count of a deterministic computation is then deterministic too */
    t0 = board_ticks();
    while ((t1 = board_ticks()) == t0) {
    }
    t0 = t1;
    for (j = 0; j < k; ++j) {
        model_step((const int8_t *)(p->body + 4u + (uint32_t)j * n_in), n_out);
        if (with_logits) {
            for (i = 0; i < n_out; ++i) {
                out[n++] = (uint8_t)last_logits[i];
            }
        }
    }
    add_ticks(board_ticks() - t0);
    mg_put_u32(out, steps);
    cache_type = p->type;
    cache_seq = p->seq;
    cache_req_len = p->len;
    memcpy(cache_req, p->body, p->len);
    cache_end = steps;
    cache_len = n;
    send_packet((uint8_t)(p->type | MG_T_REPLY), p->seq, out, n);
}

static void handle_run_end(const mg_packet_t *p)
{
    uint16_t n_out = mg_model_info()->n_out, first = 0u, count, i, n = 0u;
    if (p->len != 0u && p->len != 2u) {
        send_error(p->seq, MG_E_BAD_LENGTH, p->type, 2u);
        return;
    }
    if (p->len == 2u) {
        first = mg_get_u16(p->body);
    }
    if (n_out > MG_APP_MAX_OUT) {
        send_error(p->seq, MG_E_TOO_LARGE, p->type, n_out);
        return;
    }
    count = (first < n_out) ? (uint16_t)(n_out - first) : 0u;
    if (count > (MG_PROTO_MAX_BODY - 18u) / 5u) {
        count = (uint16_t)((MG_PROTO_MAX_BODY - 18u) / 5u);
    }
    mg_put_u32(reply + n, steps); n += 4u;
    mg_put_u32(reply + n, ticks_lo); n += 4u;
    mg_put_u32(reply + n, ticks_hi); n += 4u;
    mg_put_u16(reply + n, n_out); n += 2u;
    mg_put_u16(reply + n, first); n += 2u;
    mg_put_u16(reply + n, count); n += 2u;
    for (i = 0; i < count; ++i) {
        mg_put_u32(reply + n, (uint32_t)sums[first + i]); n += 4u;
    }
    for (i = 0; i < count; ++i) {
        reply[n++] = (uint8_t)last_logits[first + i];
    }
    send_packet((uint8_t)(MG_T_RUN_END | MG_T_REPLY), p->seq, reply, n);
}

static void dispatch(const mg_packet_t *p)
{
    if (p->version != MG_PROTO_VERSION) {
        send_error(p->seq, MG_E_VERSION, p->type, MG_PROTO_VERSION);
        return;
    }
    switch (p->type) {
    case MG_T_HELLO:
        if (p->len != 0u) {
            send_error(p->seq, MG_E_BAD_LENGTH, p->type, 0u);
            return;
        }
        handle_hello(p);
        break;
    case MG_T_RESET:
    case MG_T_RUN_BEGIN:
        if (p->len != (p->type == MG_T_RUN_BEGIN ? 1u : 0u)) {
            send_error(p->seq, MG_E_BAD_LENGTH, p->type, p->type == MG_T_RUN_BEGIN ? 1u : 0u);
            return;
        }
        reset_state();
        if (p->type == MG_T_RUN_BEGIN) {
            run_flags = (uint8_t)(p->body[0] & MG_RUN_F_STEP_LOGITS);
        }
        reply[0] = run_flags;
        send_packet((uint8_t)(p->type | MG_T_REPLY), p->seq, reply, 1u);
        break;
    case MG_T_STEP:
        handle_steps(p, 1u);
        break;
    case MG_T_RUN_CHUNK:
        handle_steps(p, (uint8_t)(run_flags & MG_RUN_F_STEP_LOGITS));
        break;
    case MG_T_RUN_END:
        handle_run_end(p);
        break;
    default:
        send_error(p->seq, MG_E_UNKNOWN_TYPE, p->type, 0u);
        break;
    }
}

void mg_app_init(void)
{
    uint8_t v = (uint8_t)MG_PROTO_VERSION;
    mg_rx_init(&rx);
    reset_state();
    send_packet(MG_T_BOOT, 0u, &v, 1u);
}

void mg_app_feed(uint8_t byte)
{
    mg_packet_t pkt;
    mg_proto_error_t err;
    mg_rx_status_t st = mg_rx_feed(&rx, byte, &pkt, &err);
    if (st == MG_RX_PACKET) {
        if (pkt.type & MG_T_REPLY) {
            return;   /* a device-to-host type (e.g. an echo of our own output): ignore */
        }
        dispatch(&pkt);
    } else if (st == MG_RX_ERROR) {
        send_error(err.seq, err.code, err.type,
                   err.code == MG_E_OVERSIZE ? (uint32_t)MG_PROTO_MAX_BODY : 0u);
    }
}

int mg_app_poll(void)
{
    int c, n = 0;
    while ((c = board_uart_getc_nonblocking()) >= 0) {
        mg_app_feed((uint8_t)c);
        n++;
    }
    return n;
}

void mg_app_main(void)
{
    board_init();
    mg_app_init();
    for (;;) {
        if (mg_app_poll() == 0) {
            board_idle();
        }
    }
}
