/* mg_model.h - the interface every generated mGRADE model package implements
 * (written by `python -m mgrade_edge.convert.codegen MODEL.tflite --out DIR`).
 *
 * A model's per-stream state lives in an instance, mg_model_t, whose layout the package's
 * mg_model_data.h defines (sizes fixed at build time, no malloc): one firmware can run two
 * streams of one model with two instances. The package's step scratch is one shared static
 * buffer: steps of different instances may interleave but must not run concurrently (two
 * threads, or an ISR stepping one instance while the main loop steps another).
 *
 *     static mg_model_t m;             (#include "mg_model_data.h" for the complete type)
 *     mg_model_init(&m);               zero delay rings, minGRU states, step counter
 *     mg_model_step(&m, x, logits);    per frame
 *
 * A package generated with another prefix (--prefix kws) has the same interface as
 * kws_model_t / kws_model_init / kws_model_step / kws_model_info in kws_model_data.h, so
 * two different models link into one program. */
#ifndef MG_MODEL_H
#define MG_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { const char *name; uint8_t id[8]; uint16_t n_in; uint16_t n_out; uint32_t n_macs_per_step; } mg_model_info_t;
typedef struct mg_model_s mg_model_t;                   /* defined in the package's mg_model_data.h */
void mg_model_init(mg_model_t *m);                      /* zero delay rings, minGRU states, step counter */
void mg_model_step(mg_model_t *m, const int8_t *x, int8_t *logits);  /* one int8 frame [n_in] in, the step's int8 logits [n_out] out */
const mg_model_info_t *mg_model_info(void);

#ifdef __cplusplus
}
#endif

#endif /* MG_MODEL_H */
