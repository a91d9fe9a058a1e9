/* two_models.c - host harness: two different generated model packages linked into one
 * program (tests/test_model_instances.py): one generated with the default prefix (mg_model_*,
 * mg_model_data.h), one with --prefix kws (kws_model_*, kws_model_data.h), stepped
 * interleaved, one instance each.
 *
 * stdin:  uint32 steps T (native byte order), T frames of MG_MODEL_N_IN int8 (model mg), then
 *         T frames of KWS_MODEL_N_IN int8 (model kws).
 * stdout: per step t: mg's logits and debug states after its step on frame t, then kws's.
 * Build:  cc -std=c99 -DMG_MODEL_DEBUG -I mcu/runtime -I GEN_MG -I GEN_KWS two_models.c
 *         GEN_MG/mg_model{,_data}.c GEN_KWS/kws_model{,_data}.c mcu/runtime/<all>.c
 */
#include <stdio.h>

#include "kws_model_data.h"
#include "mg_model.h"
#include "mg_model_data.h"

#ifndef MG_MODEL_DEBUG
#error "build with -DMG_MODEL_DEBUG"
#endif

#define MAX_STEPS 4096u

static mg_model_t m1;
static kws_model_t m2;
static int8_t x1[MAX_STEPS][MG_MODEL_N_IN];
static int8_t x2[MAX_STEPS][KWS_MODEL_N_IN];

int main(void)
{
    uint32_t T, t;
    int k;
    int8_t l1[MG_MODEL_N_OUT], l2[KWS_MODEL_N_OUT];
    if (mg_model_info()->n_in != MG_MODEL_N_IN || kws_model_info()->n_in != KWS_MODEL_N_IN) {
        return 3;
    }
    if (fread(&T, sizeof T, 1, stdin) != 1 || T > MAX_STEPS ||
        fread(x1, MG_MODEL_N_IN, T, stdin) != T || fread(x2, KWS_MODEL_N_IN, T, stdin) != T) {
        return 2;
    }
    kws_model_init(&m2);
    mg_model_init(&m1);
    for (t = 0; t < T; ++t) {
        mg_model_step(&m1, x1[t], l1);
        fwrite(l1, 1, sizeof l1, stdout);
        for (k = 0; k < MG_MODEL_DEBUG_NUM_STATES; ++k) {
            fwrite(mg_model_debug_state(&m1, k), 1, MG_MODEL_DEBUG_STATE_BYTES, stdout);
        }
        kws_model_step(&m2, x2[t], l2);
        fwrite(l2, 1, sizeof l2, stdout);
        for (k = 0; k < KWS_MODEL_DEBUG_NUM_STATES; ++k) {
            fwrite(kws_model_debug_state(&m2, k), 1, KWS_MODEL_DEBUG_STATE_BYTES, stdout);
        }
    }
    return 0;
}
