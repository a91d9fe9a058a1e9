/* mg_delay.c - see mg_delay.h. */
#include "mg_delay.h"

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
    mg_delay_step(p, 0, (const MG_ROM mg_requant_params_t *)0, (const MG_ROM int64_t *)0, ring,
                  t, frame, out, (int16_t *)0);
}
