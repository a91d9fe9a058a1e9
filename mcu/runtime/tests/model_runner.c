/* model_runner.c - host harness for a generated mGRADE model package (mg_model.h).
 *
 * stdin:  uint32 n_seq, uint32 steps (native byte order), then n_seq * steps frames of
 *         MG_MODEL_N_IN int8 values.
 * stdout: per step, the int8 logits [MG_MODEL_N_OUT] followed by every debug state
 *         (mg_model_debug_state(&m, k), k < MG_MODEL_DEBUG_NUM_STATES, MG_MODEL_DEBUG_STATE_BYTES
 *         each). The instance is initialised (mg_model_init) before each sequence.
 * Build:  cc -std=c99 -DMG_MODEL_DEBUG -I mcu/runtime -I GEN model_runner.c GEN/mg_model.c
 *         GEN/mg_model_data.c mcu/runtime/{mg_kernels,mg_quant,mg_delay,mg_mingru}.c
 */
#include <stdio.h>

#include "mg_model.h"
#include "mg_model_data.h"

#ifndef MG_MODEL_DEBUG
#error "build with -DMG_MODEL_DEBUG"
#endif

static mg_model_t m;

int main(void)
{
    uint32_t hdr[2];
    uint32_t s, t;
    int8_t x[MG_MODEL_N_IN];
    int8_t logits[MG_MODEL_N_OUT];
    const mg_model_info_t *info = mg_model_info();
    if (info->n_in != MG_MODEL_N_IN || info->n_out != MG_MODEL_N_OUT) {
        return 3;
    }
    if (fread(hdr, sizeof hdr[0], 2, stdin) != 2) {
        return 2;
    }
    for (s = 0; s < hdr[0]; ++s) {
        mg_model_init(&m);
        for (t = 0; t < hdr[1]; ++t) {
            int k;
            if (fread(x, 1, sizeof x, stdin) != sizeof x) {
                return 2;
            }
            mg_model_step(&m, x, logits);
            fwrite(logits, 1, sizeof logits, stdout);
            for (k = 0; k < MG_MODEL_DEBUG_NUM_STATES; ++k) {
                fwrite(mg_model_debug_state(&m, k), 1, MG_MODEL_DEBUG_STATE_BYTES, stdout);
            }
        }
    }
    return 0;
}
