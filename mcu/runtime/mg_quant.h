/* mg_quant.h - fixed-point helpers with TFLite / TFLite-Micro reference integer semantics.
 *
 * All functions are pure integer arithmetic (no float). They reproduce, bit for bit:
 *   - gemmlowp SaturatingRoundingDoublingHighMul / RoundingDivideByPOT,
 *   - tflite::MultiplyByQuantizedMultiplier in its two historical variants:
 *       MG_SINGLE_ROUNDING == 0 (default): "double rounding" (SRDHM then rounding shift),
 *         which is what the tflite-micro reference kernels use unless built with
 *         TFLITE_SINGLE_ROUNDING (verified against the tflite-micro Python wheel);
 *       MG_SINGLE_ROUNDING == 1: one 64-bit multiply with a single round-half-up shift
 *         (what LiteRT's default XNNPACK path reproduces; differs from TFLM by 1 LSB on a
 *         fraction of a percent of FULLY_CONNECTED/DEPTHWISE/MUL outputs).
 *   - the gemmlowp fixed-point logistic on a Q4.27 input used by TFLM's int8 LOGISTIC.
 *
 * Assumes two's complement int32 and an arithmetic right shift of negative values
 * (true for gcc/clang on every target we build for).
 */
#ifndef MG_QUANT_H
#define MG_QUANT_H

#include <stdint.h>

#include "mg_rom.h"

#ifndef MG_SINGLE_ROUNDING
#define MG_SINGLE_ROUNDING 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* (a * b * 2) >> 32 rounded to nearest (ties away from zero), saturating INT32_MIN^2. */
int32_t mg_srdhm(int32_t a, int32_t b);

/* x / 2^exponent rounded to nearest, ties away from zero. 0 <= exponent <= 31. */
int32_t mg_rdbpot(int32_t x, int exponent);

/* x * quantized_multiplier * 2^(shift - 31), TFLite rounding (see MG_SINGLE_ROUNDING).
 * quantized_multiplier in [2^30, 2^31) (or 0), shift in [-31, 30]. */
int32_t mg_mbqm(int32_t x, int32_t quantized_multiplier, int shift);

/* TFLite's MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0). */
int32_t mg_mbqm_smaller_than_one(int32_t x, int32_t quantized_multiplier, int shift);

/* gemmlowp::logistic(FixedPoint<int32_t, 4>::FromRaw(x)).raw(): input Q4.27, output Q0.31. */
int32_t mg_logistic_q4(int32_t x);

/* sigmoid(i / 24), i = 0..255, unsigned 0.16: the table TFLite's int16 LOGISTIC interpolates. */
extern const MG_ROM uint16_t mg_sigmoid_lut16[256];

#ifdef __cplusplus
}
#endif

#endif /* MG_QUANT_H */
