/* mg_model.h - the interface every generated mGRADE model package implements
 * (written by `python -m convert.codegen MODEL.tflite --out DIR`). */
#ifndef MG_MODEL_H
#define MG_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { const char *name; uint8_t id[8]; uint16_t n_in; uint16_t n_out; uint32_t n_macs_per_step; } mg_model_info_t;
void mg_model_reset(void);                              /* zero delay rings, minGRU states */
void mg_model_step(const int8_t *x, int8_t *logits);    /* one int8 frame [n_in] in, the step's int8 logits [n_out] out */
const mg_model_info_t *mg_model_info(void);

#ifdef __cplusplus
}
#endif

#endif /* MG_MODEL_H */
