/* graph_runner.c - host test harness for a generated model package (prefix "mg").
 *
 * Reads records from stdin, each the concatenation of all graph inputs (raw bytes, in
 * mg_graph_inputs[] order and sizes); runs mg_graph_invoke once per record and writes one
 * status byte (0 ok, 1 error) followed by all graph outputs (raw bytes) to stdout.
 * Build: cc -std=c99 -I mcu/runtime -I GEN_DIR graph_runner.c GEN_DIR/mg_model_data.c
 *        mcu/runtime/mg_kernels.c mcu/runtime/mg_quant.c
 */
#include <stdio.h>

#include "mg_model_data.h"

static int32_t in_pool[MG_GRAPH_INPUT_BYTES_TOTAL / 4 + 1];
static int32_t out_pool[MG_GRAPH_OUTPUT_BYTES_TOTAL / 4 + 1];

int main(void)
{
    const void *ins[MG_GRAPH_NUM_INPUTS + 1];
    void *outs[MG_GRAPH_NUM_OUTPUTS + 1];
    int32_t off = 0;
    int k;
    for (k = 0; k < MG_GRAPH_NUM_INPUTS; ++k) {
        ins[k] = (const void *)((int8_t *)in_pool + off);
        off += (mg_graph_inputs[k].bytes + 3) / 4 * 4;
    }
    off = 0;
    for (k = 0; k < MG_GRAPH_NUM_OUTPUTS; ++k) {
        outs[k] = (void *)((int8_t *)out_pool + off);
        off += (mg_graph_outputs[k].bytes + 3) / 4 * 4;
    }
    for (;;) {
        int status;
        unsigned char st;
        for (k = 0; k < MG_GRAPH_NUM_INPUTS; ++k) {
            size_t n = (size_t)mg_graph_inputs[k].bytes;
            if (fread((void *)ins[k], 1, n, stdin) != n) {
                return k == 0 ? 0 : 2;
            }
        }
        status = mg_graph_invoke(ins, outs);
        st = (unsigned char)(status != 0);
        fwrite(&st, 1, 1, stdout);
        for (k = 0; k < MG_GRAPH_NUM_OUTPUTS; ++k) {
            fwrite(outs[k], 1, (size_t)mg_graph_outputs[k].bytes, stdout);
        }
    }
}
