/* mg_delay.c - see mg_delay.h. */
#include "mg_delay.h"

#include "mg_elem.h"

void mg_delay_reset(int8_t *ring, size_t ring_bytes, int8_t zero_point)
{
    size_t k;
    for (k = 0; k < ring_bytes; ++k) {
        ring[k] = zero_point;
    }
}

void mg_delay_step_s8(const MG_ROM mg_delay_params_t *p, int8_t *ring, uint32_t t,
                      const int8_t *frame, int8_t *out)
{
    const int32_t H = p->channels;
    int32_t c, e;
    for (c = 0; c < H; ++c) {
        const uint32_t len = p->ring_len[c];
        int8_t *slots = len ? ring + p->ring_off[c] : ring;
        const uint32_t pos = len ? t % len : 0u;    /* slot of frame t */
        const int32_t cur = (int32_t)frame[c];
        int32_t acc = 0;
        for (e = 0; e < p->taps; ++e) {
            const int32_t v = (int32_t)mg_ring_tap(slots, pos, len, p->delay[e * H + c],
                                                   (int8_t)cur);
            acc += (int32_t)p->filter[e * H + c] * (v + p->input_offset);
        }
        if (p->bias) {
            acc += p->bias[c];
        }
        out[c] = mg_requant_clamp1(acc, p->multiplier[c], p->shift[c], p->output_offset,
                                   p->act_min, p->act_max);
        if (len) {
            slots[pos] = frame[c];
        }
    }
}
