/* fuzz_proto.c - seeded random/mutation fuzzer for the protocol stack on the host.
 *
 * Build with -fsanitize=address,undefined (see `make -C mcu fuzz`), link with mg_app.c,
 * mg_proto.c, mg_cobs.c, mg_crc.c and a model (tests/fixtures/toy_model). Usage:
 *     fuzz_proto [N_FRAMES] [SEED]
 * Every frame (random bytes, mutated valid frames, valid frames, oversized runs) is fed byte
 * by byte through the whole application with a fake in-memory board. Checks:
 *   - CRC-16 check value and COBS round trips (random lengths/zero densities);
 *   - every valid frame parses back to the same fields;
 *   - everything the device sends is a well-formed frame (<= MG_PROTO_MAX_WIRE, CRC ok);
 *   - probes mixed into the stream: the reply cache answers a retransmission (same bytes) with
 *     the same reply and no step, and any other request at that step index (one body byte,
 *     the seq or the length changed; at the end also one crafted to have the same CRC) with
 *     BAD_OFFSET; a body of 241..248 bytes gets
 *     OVERSIZE; a request that lost one byte after its header gets one frame-level ERROR
 *     naming its seq and type;
 *   - after the run, HELLO / RESET / STEP / RUN_* still answer correctly.
 * Prints counts; exits 0 on success, 1 on a failed check (sanitizers abort on their own). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mg_app.h"
#include "mg_board.h"
#include "mg_cobs.h"
#include "mg_crc.h"
#include "mg_model.h"
#include "mg_proto.h"

/* ---------------- fake board ---------------- */
const mg_tick_unit_t board_tick_unit = {MG_TICK_CYCLES, 1u};
static uint8_t dev_out[1u << 16];
static size_t dev_out_n;
static uint32_t fake_ticks;

void board_init(void) { }
int board_uart_getc_nonblocking(void) { return -1; }
void board_uart_putc(uint8_t c)
{
    if (dev_out_n < sizeof dev_out) {
        dev_out[dev_out_n++] = c;
    }
}
void board_uart_flush(void) { }
uint32_t board_ticks(void) { return fake_ticks += 7u; }
void board_idle(void) { }
const char *board_name(void) { return "fuzz"; }

/* ---------------- helpers ---------------- */
static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}
static uint32_t rnd_below(uint32_t n) { return n ? rnd() % n : 0u; }

static unsigned long failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; if (failures < 20) { \
    fprintf(stderr, "CHECK failed at line %d: ", __LINE__); fprintf(stderr, __VA_ARGS__); \
    fprintf(stderr, "\n"); } } } while (0)

static unsigned long n_out_frames, n_out_errors, n_out_replies, n_out_boot;
static unsigned long err_counts[16];

/* Parse everything the device produced; every frame must be valid. */
static void check_device_output(mg_packet_t *last, int *have_last, uint8_t *last_body)
{
    size_t i, start = 0;
    static uint8_t frame[1u << 16];
    for (i = 0; i < dev_out_n; ++i) {
        if (dev_out[i] == 0u) {
            size_t n = i - start;
            mg_packet_t p;
            mg_proto_error_t e;
            if (n == 0u) {          /* the leading delimiter of every device frame */
                start = i + 1u;
                continue;
            }
            CHECK(n + 1u <= MG_PROTO_MAX_WIRE, "device frame of %zu bytes", n);
            memcpy(frame, dev_out + start, n);
            if (mg_proto_parse(frame, n, &p, &e) != MG_RX_PACKET) {
                CHECK(0, "device sent an invalid frame (code %u)", e.code);
            } else {
                n_out_frames++;
                if (p.type == MG_T_ERROR) {
                    n_out_errors++;
                    CHECK(p.len == 6u, "error body length %u", p.len);
                    if (p.len == 6u && p.body[0] < 16u) {
                        err_counts[p.body[0]]++;
                    }
                } else if (p.type == MG_T_BOOT) {
                    n_out_boot++;
                } else {
                    n_out_replies++;
                }
                if (last != NULL) {
                    *last = p;
                    memcpy(last_body, p.body, p.len);
                    last->body = last_body;
                    *have_last = 1;
                }
            }
            start = i + 1u;
        }
    }
    CHECK(start == dev_out_n, "device output does not end with a delimiter");
    dev_out_n = 0u;
}

static void feed(const uint8_t *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        mg_app_feed(b[i]);
    }
}

static uint8_t seq_counter;

/* Build a random (mostly plausible) valid request into wire; returns its length. */
static size_t make_valid(uint8_t *wire, size_t cap, uint8_t *type_out)
{
    static uint8_t body[MG_PROTO_MAX_BODY];
    const mg_model_info_t *info = mg_model_info();
    uint8_t type;
    uint16_t len = 0u, i;
    uint32_t pick = rnd_below(10u);
    if (pick < 2u) {
        type = MG_T_HELLO;
    } else if (pick < 3u) {
        type = MG_T_RESET;
    } else if (pick < 5u) {
        type = MG_T_STEP;
        len = (uint16_t)(4u + info->n_in);
    } else if (pick < 6u) {
        type = MG_T_RUN_BEGIN;
        len = 1u;
    } else if (pick < 8u) {
        type = MG_T_RUN_CHUNK;
        len = (uint16_t)(4u + info->n_in * (1u + rnd_below(20u)));
    } else if (pick < 9u) {
        type = MG_T_RUN_END;
        len = (uint16_t)(rnd_below(2u) * 2u);
    } else {
        type = (uint8_t)rnd();
        len = (uint16_t)rnd_below(MG_PROTO_MAX_BODY + 1u);
    }
    if (len > MG_PROTO_MAX_BODY) {
        len = MG_PROTO_MAX_BODY;
    }
    for (i = 0; i < len; ++i) {
        body[i] = (uint8_t)rnd();
    }
    if ((type == MG_T_STEP || type == MG_T_RUN_CHUNK) && len >= 4u && rnd_below(4u) != 0u) {
        mg_put_u32(body, rnd_below(3u) == 0u ? rnd() : rnd_below(64u));  /* small offsets */
    }
    *type_out = type;
    return mg_proto_encode(type, seq_counter++, body, len, wire, cap);
}

static void mutate(uint8_t *b, size_t *n, size_t cap)
{
    uint32_t k, reps = 1u + rnd_below(4u);
    for (k = 0; k < reps; ++k) {
        size_t len = *n, pos;
        switch (rnd_below(7u)) {
        case 0: /* bit flip */
            if (len) { b[rnd_below((uint32_t)len)] ^= (uint8_t)(1u << rnd_below(8u)); }
            break;
        case 1: /* random byte */
            if (len) { b[rnd_below((uint32_t)len)] = (uint8_t)rnd(); }
            break;
        case 2: /* truncate */
            if (len) { *n = rnd_below((uint32_t)len); }
            break;
        case 3: /* insert */
            if (len < cap) {
                pos = rnd_below((uint32_t)len + 1u);
                memmove(b + pos + 1, b + pos, len - pos);
                b[pos] = (uint8_t)rnd();
                *n = len + 1u;
            }
            break;
        case 4: /* delete */
            if (len) {
                pos = rnd_below((uint32_t)len);
                memmove(b + pos, b + pos + 1, len - pos - 1u);
                *n = len - 1u;
            }
            break;
        case 5: /* drop the delimiter (frames run together) */
            if (len && b[len - 1u] == 0u) { *n = len - 1u; }
            break;
        default: /* duplicate a chunk */
            if (len && len * 2u <= cap) {
                pos = rnd_below((uint32_t)len);
                memcpy(b + len, b + pos, len - pos);
                *n = len + (len - pos);
            }
            break;
        }
    }
}

/* A structurally valid packet (correct COBS, usually a correct CRC) with random header
 * fields and body: exercises the dispatcher rather than the framing. */
static size_t make_semantic(uint8_t *wire, size_t cap)
{
    static uint8_t pkt[MG_PROTO_MAX_PACKET + 64u];
    static const uint8_t types[] = {MG_T_HELLO, MG_T_RESET, MG_T_STEP, MG_T_RUN_BEGIN,
                                    MG_T_RUN_CHUNK, MG_T_RUN_END, 0x00u, 0x7Fu, 0x81u, 0xFEu, 0xFFu};
    uint16_t len = (uint16_t)rnd_below(MG_PROTO_MAX_BODY + 40u), i, crc, field;
    size_t n, total = (size_t)MG_PROTO_HEADER + len + MG_PROTO_CRC_BYTES;
    pkt[0] = rnd_below(10u) ? (uint8_t)MG_PROTO_VERSION : (uint8_t)rnd();
    pkt[1] = rnd_below(8u) ? types[rnd_below((uint32_t)sizeof types)] : (uint8_t)rnd();
    pkt[2] = (uint8_t)rnd();
    field = rnd_below(8u) ? len : (uint16_t)rnd();
    mg_put_u16(pkt + 3, field);
    for (i = 0; i < len; ++i) {
        pkt[MG_PROTO_HEADER + i] = (uint8_t)(rnd_below(3u) ? rnd_below(4u) : rnd());
    }
    crc = mg_crc16_update(MG_CRC16_INIT, pkt, (size_t)MG_PROTO_HEADER + len);
    if (rnd_below(10u) == 0u) {
        crc ^= (uint16_t)(1u << rnd_below(16u));
    }
    mg_put_u16(pkt + MG_PROTO_HEADER + len, crc);
    n = mg_cobs_encode(pkt, total, wire, cap - 1u);
    wire[n] = 0u;
    return n + 1u;
}

static void self_tests(void)
{
    static uint8_t src[1200], enc[1300], dec[1300];
    const uint8_t check[] = "123456789";
    uint32_t it;
    CHECK(mg_crc16_update(MG_CRC16_INIT, check, 9u) == 0x29B1u, "CRC-16/CCITT-FALSE check value");
    for (it = 0; it < 20000u; ++it) {
        size_t n = rnd_below(it < 1000u ? 600u : 1100u), m, dn = 0, i;
        uint32_t zero_pct = rnd_below(101u);
        for (i = 0; i < n; ++i) {
            src[i] = (rnd_below(100u) < zero_pct) ? 0u : (uint8_t)(1u + rnd_below(255u));
        }
        m = mg_cobs_encode(src, n, enc, sizeof enc);
        CHECK(m >= 1u && m <= MG_COBS_MAX_ENCODED(n), "cobs length %zu for %zu", m, n);
        CHECK(memchr(enc, 0, m) == NULL, "cobs output contains 0");
        CHECK(mg_cobs_decode(enc, m, dec, sizeof dec, &dn) == 0 && dn == n &&
              memcmp(dec, src, n) == 0, "cobs round trip (n=%zu)", n);
        /* exact capacity must succeed, one less must fail cleanly */
        CHECK(mg_cobs_encode(src, n, enc, m) == m, "cobs exact capacity");
        CHECK(mg_cobs_encode(src, n, enc, m - 1u) == 0u, "cobs short capacity");
        /* in-place decoding */
        memcpy(dec, enc, m);
        CHECK(mg_cobs_decode(dec, m, dec, m, &dn) == 0 && dn == n && memcmp(dec, src, n) == 0,
              "cobs in-place decode");
    }
}

static int expect_reply(const uint8_t *wire, size_t n, uint8_t type, uint8_t seq, mg_packet_t *p,
                        uint8_t *body)
{
    int have = 0;
    feed(wire, n);
    check_device_output(p, &have, body);
    return have && p->type == type && p->seq == seq;
}


/* ---------------- probes: exact answers to crafted sequences ---------------- */
static unsigned long n_cache_probes, n_oversize_probes, n_drop_probes, n_drop_seq_checked;

/* Feed one request and return the single frame the device answered (1), or 0. */
static int ask(const uint8_t *wire, size_t n, mg_packet_t *p, uint8_t *body)
{
    int have = 0;
    const uint8_t lead = 0u;
    feed(&lead, 1u);
    feed(wire, n);
    check_device_output(p, &have, body);
    return have;
}

static int is_error(const mg_packet_t *p, uint8_t code, uint8_t req, uint32_t detail)
{
    return p->type == MG_T_ERROR && p->len == 6u && p->body[0] == code && p->body[1] == req &&
           mg_get_u32(p->body + 2) == detail;
}

/* RUN_BEGIN, a RUN_CHUNK of k steps, its retransmission (cached), three other requests at
 * the same t (BAD_OFFSET), a STEP (executes, replaces the cache), the chunk again (now
 * BAD_OFFSET), RUN_END (k + 1 steps: nothing stepped twice). */
static void cache_probe(void)
{
    static uint8_t body[MG_PROTO_MAX_BODY], wire[MG_PROTO_MAX_WIRE], w2[MG_PROTO_MAX_WIRE];
    static uint8_t rb[MG_PROTO_MAX_BODY], first[MG_PROTO_MAX_BODY];
    const mg_model_info_t *info = mg_model_info();
    uint16_t n_in = info->n_in, n_out = info->n_out, kmax, k, len, i, flen;
    uint8_t flags = (uint8_t)rnd_below(2u), seq = (uint8_t)rnd(), run_flags_wire = flags;
    mg_packet_t p;
    size_t n, n2;
    kmax = (uint16_t)((MG_PROTO_MAX_BODY - 4u) / n_in);
    if (flags && (MG_PROTO_MAX_BODY - 4u) / n_out < kmax) {
        kmax = (uint16_t)((MG_PROTO_MAX_BODY - 4u) / n_out);
    }
    if (kmax < 2u) {
        return;
    }
    n_cache_probes++;
    k = (uint16_t)(1u + rnd_below(kmax));
    n = mg_proto_encode(MG_T_RUN_BEGIN, seq, &run_flags_wire, 1u, wire, sizeof wire);
    CHECK(ask(wire, n, &p, rb) && p.type == (MG_T_RUN_BEGIN | MG_T_REPLY), "probe RUN_BEGIN");
    len = (uint16_t)(4u + k * n_in);
    mg_put_u32(body, 0u);
    for (i = 4u; i < len; ++i) {
        body[i] = (uint8_t)rnd();
    }
    seq++;
    n = mg_proto_encode(MG_T_RUN_CHUNK, seq, body, len, wire, sizeof wire);
    CHECK(ask(wire, n, &p, rb) && p.type == (MG_T_RUN_CHUNK | MG_T_REPLY) && p.seq == seq &&
          mg_get_u32(p.body) == k && p.len == 4u + (flags ? k * n_out : 0u), "probe chunk");
    flen = p.len;
    memcpy(first, p.body, flen);
    /* the retransmission: the same bytes -> the same reply, nothing stepped */
    CHECK(ask(wire, n, &p, rb) && p.type == (MG_T_RUN_CHUNK | MG_T_REPLY) && p.seq == seq &&
          p.len == flen && memcmp(p.body, first, flen) == 0, "probe retransmission from cache");
    /* one frame byte changed, same seq */
    memcpy(w2, body, len);
    i = (uint16_t)(4u + rnd_below((uint32_t)(len - 4u)));
    w2[i] = (uint8_t)(w2[i] + 1u + rnd_below(255u));
    n2 = mg_proto_encode(MG_T_RUN_CHUNK, seq, w2, len, wire, sizeof wire);
    CHECK(ask(wire, n2, &p, rb) && p.seq == seq && is_error(&p, MG_E_BAD_OFFSET, MG_T_RUN_CHUNK, k),
          "probe: another chunk at the same t under the same seq must not be answered from the cache");
    /* the same bytes under another seq */
    n2 = mg_proto_encode(MG_T_RUN_CHUNK, (uint8_t)(seq + 1u + rnd_below(255u)), body, len, wire,
                         sizeof wire);
    CHECK(ask(wire, n2, &p, rb) && is_error(&p, MG_E_BAD_OFFSET, MG_T_RUN_CHUNK, k),
          "probe: the same chunk under a new seq is a new request");
    /* another length (fewer frames), same seq */
    if (k > 1u) {
        n2 = mg_proto_encode(MG_T_RUN_CHUNK, seq, body, (uint16_t)(len - n_in), wire, sizeof wire);
        CHECK(ask(wire, n2, &p, rb) && is_error(&p, MG_E_BAD_OFFSET, MG_T_RUN_CHUNK, k),
              "probe: a shorter chunk at the same t");
    }
    /* a STEP at t = k executes and replaces the cache */
    mg_put_u32(w2, k);
    for (i = 0; i < n_in; ++i) {
        w2[4u + i] = (uint8_t)rnd();
    }
    n2 = mg_proto_encode(MG_T_STEP, (uint8_t)(seq + 1u), w2, (uint16_t)(4u + n_in), wire, sizeof wire);
    CHECK(ask(wire, n2, &p, rb) && p.type == (MG_T_STEP | MG_T_REPLY) && mg_get_u32(p.body) == k + 1u,
          "probe STEP after the chunk");
    CHECK(ask(wire, n2, &p, rb) && p.type == (MG_T_STEP | MG_T_REPLY) && mg_get_u32(p.body) == k + 1u,
          "probe STEP retransmission");
    n2 = mg_proto_encode(MG_T_RUN_CHUNK, seq, body, len, wire, sizeof wire);
    CHECK(ask(wire, n2, &p, rb) && is_error(&p, MG_E_BAD_OFFSET, MG_T_RUN_CHUNK, k + 1u),
          "probe: an older request is no longer in the cache");
    n2 = mg_proto_encode(MG_T_RUN_END, (uint8_t)(seq + 2u), NULL, 0u, wire, sizeof wire);
    CHECK(ask(wire, n2, &p, rb) && p.type == (MG_T_RUN_END | MG_T_REPLY) &&
          mg_get_u32(p.body) == k + 1u, "probe RUN_END: nothing stepped twice");
}

/* An intact packet whose body is 241..248 bytes (it still fits the RX buffer): OVERSIZE;
 * one of exactly 240 bytes is within the limit (its type decides the answer). */
static void oversize_probe(void)
{
    static uint8_t pkt[MG_PROTO_MAX_PACKET + 8u], wire[MG_PROTO_RX_BUF + 8u], rb[MG_PROTO_MAX_BODY];
    uint16_t len = (uint16_t)(MG_PROTO_MAX_BODY + rnd_below(9u)), i, crc;
    uint8_t type = (uint8_t)(1u + rnd_below(0x7Fu)), seq = (uint8_t)rnd();
    size_t n;
    mg_packet_t p;
    n_oversize_probes++;
    pkt[0] = (uint8_t)MG_PROTO_VERSION;
    pkt[1] = type;
    pkt[2] = seq;
    mg_put_u16(pkt + 3, len);
    for (i = 0; i < len; ++i) {
        pkt[MG_PROTO_HEADER + i] = (uint8_t)rnd();
    }
    crc = mg_crc16_update(MG_CRC16_INIT, pkt, (size_t)MG_PROTO_HEADER + len);
    mg_put_u16(pkt + MG_PROTO_HEADER + len, crc);
    n = mg_cobs_encode(pkt, (size_t)MG_PROTO_HEADER + len + MG_PROTO_CRC_BYTES, wire, sizeof wire - 1u);
    CHECK(n > 0u && n <= MG_PROTO_RX_BUF, "oversize probe frame of %zu bytes", n);
    wire[n++] = 0u;
    if (len > MG_PROTO_MAX_BODY) {
        CHECK(ask(wire, n, &p, rb) && p.seq == seq && is_error(&p, MG_E_OVERSIZE, type, MG_PROTO_MAX_BODY),
              "a %u-byte body must get OVERSIZE", (unsigned)len);
    } else {
        CHECK(ask(wire, n, &p, rb) && p.seq == seq && !(p.type == MG_T_ERROR && p.body[0] == MG_E_OVERSIZE),
              "a 240-byte body is within the limit");
    }
}

/* A valid request that loses one byte after its first 4 (code, version, type, seq): the
 * device answers one frame; a frame-level ERROR names the request's seq and type. */
static void drop_probe(void)
{
    static uint8_t wire[MG_PROTO_MAX_WIRE], rb[MG_PROTO_MAX_BODY];
    uint8_t type = 0u, seq = seq_counter;
    mg_packet_t p;
    size_t n = make_valid(wire, sizeof wire, &type), pos;
    if (n < 7u) {
        return;
    }
    n_drop_probes++;
    pos = 4u + rnd_below((uint32_t)(n - 5u));          /* never the delimiter at n - 1 */
    memmove(wire + pos, wire + pos + 1u, n - pos - 1u);
    n--;
    if (!ask(wire, n, &p, rb)) {
        CHECK(0, "no answer to a request with a byte lost");
        return;
    }
    if (p.type == MG_T_ERROR && p.len == 6u && p.body[0] >= MG_E_CRC && p.body[0] <= MG_E_OVERSIZE &&
        wire[0] >= 4u) {
        n_drop_seq_checked++;
        CHECK(p.seq == seq && p.body[1] == type,
              "frame error for a damaged request: seq %u type %u, expected %u %u (code %u)",
              p.seq, p.body[1], seq, type, p.body[0]);
    }
}

static void final_checks(void)
{
    static uint8_t wire[MG_PROTO_MAX_WIRE], body[MG_PROTO_MAX_BODY], rbody[MG_PROTO_MAX_BODY];
    const mg_model_info_t *info = mg_model_info();
    mg_packet_t p;
    size_t n;
    uint16_t i;
    const uint8_t lead = 0u;
    feed(&lead, 1u);             /* terminate whatever partial frame the fuzzer left */
    dev_out_n = 0u;
    n = mg_proto_encode(MG_T_HELLO, 0x42u, NULL, 0u, wire, sizeof wire);
    CHECK(expect_reply(wire, n, MG_T_HELLO | MG_T_REPLY, 0x42u, &p, rbody), "HELLO after fuzz");
    CHECK(p.len >= 26u && p.body[0] == MG_PROTO_VERSION && memcmp(p.body + 8, info->id, 8) == 0 &&
          mg_get_u16(p.body + 16) == info->n_in && mg_get_u16(p.body + 18) == info->n_out,
          "HELLO fields after fuzz");
    n = mg_proto_encode(MG_T_RESET, 0x43u, NULL, 0u, wire, sizeof wire);
    CHECK(expect_reply(wire, n, MG_T_RESET | MG_T_REPLY, 0x43u, &p, rbody), "RESET after fuzz");
    mg_put_u32(body, 0u);
    for (i = 0; i < info->n_in; ++i) {
        body[4u + i] = (uint8_t)(i * 13u);
    }
    n = mg_proto_encode(MG_T_STEP, 0x44u, body, (uint16_t)(4u + info->n_in), wire, sizeof wire);
    CHECK(expect_reply(wire, n, MG_T_STEP | MG_T_REPLY, 0x44u, &p, rbody) &&
          p.len == 4u + info->n_out && mg_get_u32(p.body) == 1u, "STEP after fuzz");
    /* the same STEP again is a retransmission: same reply, no second step */
    CHECK(expect_reply(wire, n, MG_T_STEP | MG_T_REPLY, 0x44u, &p, rbody) &&
          mg_get_u32(p.body) == 1u, "duplicate STEP answered from the cache");
    /* another frame crafted to have the very packet CRC of that STEP, same seq: not cached */
    if (info->n_in >= 4u) {
        static uint8_t twin[MG_PROTO_MAX_BODY];
        uint8_t hdr[MG_PROTO_HEADER] = {(uint8_t)MG_PROTO_VERSION, MG_T_STEP, 0x44u, 0u, 0u};
        uint16_t len = (uint16_t)(4u + info->n_in), target, pre, v;
        int found = 0;
        uint32_t m;
        mg_put_u16(hdr + 3, len);
        target = mg_crc16_update(mg_crc16_update(MG_CRC16_INIT, hdr, sizeof hdr), body, len);
        memcpy(twin, body, len);
        twin[4] ^= 0x01u;
        pre = mg_crc16_update(mg_crc16_update(MG_CRC16_INIT, hdr, sizeof hdr), twin, 6u);
        for (m = 0; m < 0x10000u && !found; ++m) {
            twin[6] = (uint8_t)m;
            twin[7] = (uint8_t)(m >> 8);
            v = mg_crc16_update(pre, twin + 6, (size_t)len - 6u);
            found = v == target;
        }
        CHECK(found && memcmp(twin, body, len) != 0, "no CRC twin found");
        n = mg_proto_encode(MG_T_STEP, 0x44u, twin, len, wire, sizeof wire);
        CHECK(expect_reply(wire, n, MG_T_ERROR, 0x44u, &p, rbody) && p.body[0] == MG_E_BAD_OFFSET &&
              mg_get_u32(p.body + 2) == 1u, "a request with the same seq and CRC but another frame "
              "must not be answered from the cache");
    }
    n = mg_proto_encode(MG_T_RUN_END, 0x45u, NULL, 0u, wire, sizeof wire);
    CHECK(expect_reply(wire, n, MG_T_RUN_END | MG_T_REPLY, 0x45u, &p, rbody) &&
          mg_get_u32(p.body) == 1u, "RUN_END after fuzz");
}

int main(int argc, char **argv)
{
    static uint8_t buf[4096], wire[MG_PROTO_MAX_WIRE];
    unsigned long n_frames = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000ul;
    unsigned long seed = argc > 2 ? strtoul(argv[2], NULL, 10) : 1ul;
    unsigned long i, kinds[6] = {0, 0, 0, 0, 0, 0}, bytes = 0, valid_ok = 0;
    rng_state = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)seed * 0x100000001B3ULL);
    if (rng_state == 0u) {
        rng_state = 1u;
    }
    self_tests();
    mg_app_init();
    check_device_output(NULL, NULL, NULL);
    for (i = 0; i < n_frames; ++i) {
        size_t n = 0, j;
        uint8_t type = 0;
        uint32_t kind = rnd_below(100u);
        if (kind < 25u) {                     /* random bytes, sometimes zero-free */
            int no_zero = (int)rnd_below(2u);
            n = rnd_below(320u);
            for (j = 0; j < n; ++j) {
                buf[j] = (uint8_t)rnd();
                if (no_zero && buf[j] == 0u) { buf[j] = 1u; }
            }
            if (rnd_below(2u)) { buf[n++] = 0u; }
            kinds[0]++;
        } else if (kind < 45u) {              /* valid framing, random header fields/body */
            n = make_semantic(buf, sizeof buf);
            kinds[4]++;
        } else if (kind < 85u) {              /* a mutated valid frame */
            n = make_valid(buf, sizeof buf, &type);
            mutate(buf, &n, sizeof buf);
            kinds[1]++;
        } else if (kind < 88u) {              /* probes with exact expected answers */
            uint32_t which = rnd_below(3u);
            if (which == 0u) {
                cache_probe();
            } else if (which == 1u) {
                oversize_probe();
            } else {
                drop_probe();
            }
            kinds[5]++;
            continue;
        } else if (kind < 97u) {              /* a valid frame: must parse back */
            mg_packet_t p;
            mg_proto_error_t e;
            n = make_valid(buf, sizeof buf, &type);
            memcpy(wire, buf, n);
            if (n > 1u && mg_proto_parse(wire, n - 1u, &p, &e) == MG_RX_PACKET &&
                p.type == type && p.version == MG_PROTO_VERSION) {
                valid_ok++;
            } else {
                CHECK(0, "valid frame of type %u did not parse", type);
            }
            /* make sure it starts a fresh frame on the device */
            memmove(buf + 1, buf, n);
            buf[0] = 0u;
            n++;
            kinds[2]++;
        } else {                              /* oversized: longer than the RX buffer */
            n = MG_PROTO_RX_BUF + 1u + rnd_below(1500u);
            for (j = 0; j < n; ++j) {
                buf[j] = (uint8_t)(1u + rnd_below(255u));
            }
            buf[n++] = 0u;
            kinds[3]++;
        }
        bytes += n;
        feed(buf, n);
        check_device_output(NULL, NULL, NULL);
    }
    final_checks();
    printf("fuzz_proto: seed %lu frames %lu (random %lu, semantic %lu, mutated %lu, valid %lu, "
           "oversized %lu, probes %lu) bytes %lu\n", seed, n_frames, kinds[0], kinds[4], kinds[1],
           kinds[2], kinds[3], kinds[5], bytes);
    printf("fuzz_proto: probes: cache %lu, oversize body %lu, lost byte %lu (seq checked %lu)\n",
           n_cache_probes, n_oversize_probes, n_drop_probes, n_drop_seq_checked);
    printf("fuzz_proto: valid frames parsed back %lu; device frames %lu (replies %lu, errors %lu, "
           "boot %lu)\n", valid_ok, n_out_frames, n_out_replies, n_out_errors, n_out_boot);
    printf("fuzz_proto: errors by code: crc %lu cobs %lu truncated %lu oversize %lu version %lu "
           "unknown_type %lu bad_length %lu bad_offset %lu too_large %lu\n",
           err_counts[1], err_counts[2], err_counts[3], err_counts[4], err_counts[5],
           err_counts[6], err_counts[7], err_counts[8], err_counts[9]);
    printf("fuzz_proto: %s (%lu failed checks)\n", failures ? "FAIL" : "OK", failures);
    return failures ? 1 : 0;
}
