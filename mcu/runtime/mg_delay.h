/* mg_delay.h - the mGRADE delay convolution on per-channel trimmed ring buffers.
 *
 * One call replaces the interpreter's CONCATENATION(frame, ring) -> GATHER(idx) -> RESHAPE ->
 * DEPTHWISE_CONV_2D of a layer and the caller's ring write. Channel c keeps only its own
 * R_c = max_e delay[c][e] past frames, at ring[off_c .. off_c + R_c). With a global step
 * counter t, frame t - d (1 <= d <= R_c) of channel c sits at slot (t - d) mod R_c, and
 * frame t goes to slot t mod R_c after the channel's taps were read: no buffer is shifted
 * or copied, the work is O(taps x channels) per step.
 *
 * The arithmetic is TFLite-Micro's DepthwiseConvPerChannel for a [1, 1, N, H] input and a
 * [1, 1, N, H] filter (VALID, stride 1, depth multiplier 1), so the result is bit-exact with
 * the graph it replaces. No heap, no float.
 */
#ifndef MG_DELAY_H
#define MG_DELAY_H

#include <stddef.h>
#include <stdint.h>

#include "mg_elem.h"
#include "mg_rom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t channels;            /* H */
    int32_t taps;                /* N */
    const MG_ROM uint16_t *delay;       /* [N * H], tap-major: delay[e * H + c] frames (0 = frame t) */
    const MG_ROM uint16_t *ring_len;    /* [H] R_c = max_e delay[e * H + c] (0: no ring slots) */
    const MG_ROM uint32_t *ring_off;    /* [H] first slot of channel c in the ring storage */
    const MG_ROM int8_t *filter;        /* [N * H] depthwise filter, filter[e * H + c] */
    const MG_ROM int32_t *bias;         /* [H] or NULL */
    int32_t input_offset;        /* -zero point of the frames (ring, frame and taps share it) */
    int32_t output_offset;       /* output zero point */
    int32_t act_min, act_max;
    const MG_ROM int32_t *multiplier;   /* [H] per-channel quantized multipliers */
    const MG_ROM int32_t *shift;        /* [H] */
} mg_delay_params_t;

/* The frame a tap of delay d reads at the step whose slot is pos (t mod len): the current
 * frame `cur` for d = 0, else slot (t - d) mod len of the channel's len slots (1 <= d <= len).
 * One definition for every delay kernel (reference and fast, int8 and int16 outputs). */
static inline int8_t mg_ring_tap(const int8_t *slots, uint32_t pos, uint32_t len, uint32_t d,
                                 int8_t cur)
{
    return d == 0u ? cur : slots[pos >= d ? pos - d : pos + len - d];
}

/* Step t of the delay conv of either output width, the one body of mg_delay_step_s8 and
 * mg_delay_step_s16 (mg_ops16.h), which inline it with `wide` a constant (no test of it in
 * the loops: MG_ALWAYS_INLINE, mg_elem.h). Per channel c: the taps of the len = ring_len[c] slots (mg_ring_tap), then
 *   wide 0: out8[c] = requant_clamp(sum_e filter * (tap + input_offset) + bias[c]) in int32
 *           (TFLM's int8 DEPTHWISE_CONV_2D);
 *   wide 1: out16[c] = clamp(mbqm64(sum_e filter * QUANTIZE16(tap) + bias64[c])) in int64
 *           (the 16x8 conv of the conv16 form: taps16 the int8 -> int16 QUANTIZE, bias64 [H]
 *           or NULL, d's offsets and bias unused),
 * then frame[c] written to slot t mod len. */
MG_ALWAYS_INLINE void mg_delay_step(const MG_ROM mg_delay_params_t *d, int wide,
                                   const MG_ROM mg_requant_params_t *taps16,
                                   const MG_ROM int64_t *bias64, int8_t *ring, uint32_t t,
                                   const int8_t *frame, int8_t *out8, int16_t *out16)
{
    const int32_t H = d->channels;
    int32_t c, e;
    for (c = 0; c < H; ++c) {
        const uint32_t len = d->ring_len[c];
        int8_t *slots = len ? ring + d->ring_off[c] : ring;
        const uint32_t pos = len ? t % len : 0u;    /* slot of frame t */
        const int8_t cur = frame[c];
        int32_t acc = 0;
        int64_t acc64 = 0;
        for (e = 0; e < d->taps; ++e) {
            const int8_t v = mg_ring_tap(slots, pos, len, d->delay[e * H + c], cur);
            if (wide) {
                acc64 += (int64_t)d->filter[e * H + c] * (int64_t)mg_requant32(taps16, v);
            } else {
                acc += (int32_t)d->filter[e * H + c] * ((int32_t)v + d->input_offset);
            }
        }
        if (wide) {
            int32_t y;
            if (mg_rom_nonnull(bias64)) {
                acc64 += bias64[c];
            }
            y = mg_mbqm64(acc64, d->multiplier[c], d->shift[c]);
            out16[c] = (int16_t)(y < d->act_min ? d->act_min : y > d->act_max ? d->act_max : y);
        } else {
            if (d->bias) {
                acc += d->bias[c];
            }
            out8[c] = mg_requant_clamp1(acc, d->multiplier[c], d->shift[c], d->output_offset,
                                        d->act_min, d->act_max);
        }
        if (len) {
            slots[pos] = cur;
        }
    }
}

/* Sets every ring slot to the frames' zero point (= float 0: the frames before t = 0). */
void mg_delay_reset(int8_t *ring, size_t ring_bytes, int8_t zero_point);

/* Step t (t counts steps since the reset, wrapped at a common multiple of all R_c):
 * out[c] = act(DW(frames t - delay[e][c], c)); then frame[c] is written to slot t mod R_c.
 * ring: sum_c R_c bytes (may be NULL if every R_c is 0). out must not alias frame. */
void mg_delay_step_s8(const MG_ROM mg_delay_params_t *p, int8_t *ring, uint32_t t,
                      const int8_t *frame, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* MG_DELAY_H */
