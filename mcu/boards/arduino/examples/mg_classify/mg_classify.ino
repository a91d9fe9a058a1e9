/* mg_classify - the model on a live sensor stream: one frame per step, quantized with
 * mg_model_quantize_frame(), one mg_model_step(), the class printed on Serial (115200 baud).
 *
 * Replace read_sensor_frame() with your sensor: it must give the model's MG_MODEL_N_IN inputs
 * in the units the training data had (a model trained on normalised data has the
 * normalisation folded into its first layer), at the rate the model was trained on.
 *
 * The class: argmax of the step's logits (a per-step model) and of their running sum since
 * the last reset (the mean readout of a sequence model: reset the model where a sequence
 * starts). */
#include <MGRADE_LIBRARY_HEADER>

static mg_model_t model;            /* the stream's state (delay rings, minGRU states) */
static int32_t sums[MG_MODEL_N_OUT];
static uint32_t steps;

/* STUB: fills x[MG_MODEL_N_IN] with the next sensor frame and returns true, or returns false
 * while no new frame is ready. This stub makes a deterministic test pattern; read your ADC,
 * IMU or microphone here instead. */
static bool read_sensor_frame(float *x)
{
    static uint32_t t;
    for (int i = 0; i < MG_MODEL_N_IN; ++i) {
        x[i] = (float)((int32_t)((t * 7u + (uint32_t)i * 3u) % 17u) - 8) / 8.0f;
    }
    t++;
    return true;
}

static int argmax8(const int8_t *v)
{
    int best = 0;
    for (int i = 1; i < MG_MODEL_N_OUT; ++i) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

static int argmax32(const int32_t *v)
{
    int best = 0;
    for (int i = 1; i < MG_MODEL_N_OUT; ++i) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

void setup()
{
    Serial.begin(115200);
    mg_model_init(&model);
    Serial.print(F("model " MG_MODEL_NAME " (" MG_MODEL_ID "): "));
    Serial.print(MG_MODEL_N_IN);
    Serial.print(F(" inputs, "));
    Serial.print(MG_MODEL_N_OUT);
    Serial.println(F(" classes"));
}

void loop()
{
    float x[MG_MODEL_N_IN];
    int8_t q[MG_MODEL_N_IN];
    int8_t logits[MG_MODEL_N_OUT];
    if (!read_sensor_frame(x)) {
        return;
    }
    mg_model_quantize_frame(x, q);
    mg_model_step(&model, q, logits);
    for (int i = 0; i < MG_MODEL_N_OUT; ++i) {
        sums[i] += logits[i];
    }
    steps++;
    Serial.print(F("step "));
    Serial.print(steps);
    Serial.print(F(" class "));
    Serial.print(argmax8(logits));
    Serial.print(F(" running "));
    Serial.println(argmax32(sums));
}
