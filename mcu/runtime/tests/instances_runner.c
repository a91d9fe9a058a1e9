/* instances_runner.c - host harness: two instances of one generated model package (mg_model.h)
 * stepped interleaved, each on its own stream (tests/test_model_instances.py).
 *
 * stdin:  uint32 steps T (native byte order), then three sequences A, B, C of T frames of
 *         MG_MODEL_N_IN int8 values each.
 * stdout: phase 1, per step t: instance a steps on A[t], instance b on B[t] (a, b, a, b, ...);
 *         after each step the logits [MG_MODEL_N_OUT] and every debug state of that instance.
 *         Phase 2: a is initialised again (b is not) and steps on C (logits + states per step);
 *         then b's debug states and step counter (uint32), untouched by a's init and steps.
 * Build:  cc -std=c99 -DMG_MODEL_DEBUG -I mcu/runtime -I GEN instances_runner.c GEN/mg_model.c
 *         GEN/mg_model_data.c mcu/runtime/{mg_kernels,mg_quant,mg_delay,mg_mingru,mg_fast}.c
 */
#include <stdio.h>

#include "mg_model.h"
#include "mg_model_data.h"

#ifndef MG_MODEL_DEBUG
#error "build with -DMG_MODEL_DEBUG"
#endif

#define MAX_STEPS 4096u

static mg_model_t a, b;
static int8_t seq[3][MAX_STEPS][MG_MODEL_N_IN];

static void put_states(const mg_model_t *m)
{
    int k;
    for (k = 0; k < MG_MODEL_DEBUG_NUM_STATES; ++k) {
        fwrite(mg_model_debug_state(m, k), 1, MG_MODEL_DEBUG_STATE_BYTES, stdout);
    }
}

static void step(mg_model_t *m, const int8_t *x)
{
    int8_t logits[MG_MODEL_N_OUT];
    mg_model_step(m, x, logits);
    fwrite(logits, 1, sizeof logits, stdout);
    put_states(m);
}

int main(void)
{
    uint32_t T, t, s, counter;
    if (fread(&T, sizeof T, 1, stdin) != 1 || T > MAX_STEPS) {
        return 2;
    }
    for (s = 0; s < 3u; ++s) {
        if (fread(seq[s], MG_MODEL_N_IN, T, stdin) != T) {
            return 2;
        }
    }
    mg_model_init(&a);
    mg_model_init(&b);
    for (t = 0; t < T; ++t) {
        step(&a, seq[0][t]);
        step(&b, seq[1][t]);
    }
    mg_model_init(&a);
    for (t = 0; t < T; ++t) {
        step(&a, seq[2][t]);
    }
    put_states(&b);
    counter = mg_model_debug_step_counter(&b);
    fwrite(&counter, sizeof counter, 1, stdout);
    return 0;
}
