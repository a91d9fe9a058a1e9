/* mg_kernels.h - int8 reference kernels with TFLite-Micro's integer arithmetic.
 *
 * Every kernel takes a const parameter struct that holds everything TFLM computes in its
 * Prepare step (offsets, quantized multipliers/shifts, activation clamps, shapes). The
 * parameters are computed offline by convert/tflm_params.py exactly as TFLM computes them, so
 * the kernels contain no floating point. No heap, no global state; outputs must not alias
 * inputs (except where noted).
 */
#ifndef MG_KERNELS_H
#define MG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "mg_rom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MG_MAX_DIMS 6

/* Element types of graph tensors (inputs/outputs/arena). */
typedef enum { MG_TYPE_INT8 = 0, MG_TYPE_INT32 = 1 } mg_type_t;

/* Description of one graph input or output tensor. */
typedef struct {
    const char *name;     /* signature name (or tensor name) */
    mg_type_t type;
    int32_t ndims;
    int32_t dims[MG_MAX_DIMS];
    int32_t elems;        /* number of elements */
    int32_t bytes;        /* size in bytes */
    int32_t zero_point;   /* 0 for non-quantized tensors */
} mg_io_desc_t;

/* Broadcast description for binary elementwise ops.
 * ndims == 0: both inputs have `count` elements (no broadcast).
 * ndims > 0: output shape `shape[0..ndims)` (row-major, contiguous, `count` elements);
 * stride1/stride2 are the element strides of each input per output dimension (0 where
 * the input is broadcast along that dimension). */
typedef struct {
    int32_t count;
    int32_t ndims;
    int32_t shape[MG_MAX_DIMS];
    int32_t stride1[MG_MAX_DIMS];
    int32_t stride2[MG_MAX_DIMS];
} mg_bcast_t;

/* FULLY_CONNECTED: input [batches, accum_depth], filter [output_depth, accum_depth] int8,
 * bias [output_depth] int32 or NULL, output [batches, output_depth].
 * per_channel == 0: multiplier[0]/shift[0] for all channels (TFLM FullyConnected,
 * uses filter_offset); per_channel != 0: multiplier[c]/shift[c] (FullyConnectedPerChannel,
 * no filter offset). */
typedef struct {
    int32_t batches, accum_depth, output_depth;
    int32_t input_offset;   /* -input zero point */
    int32_t filter_offset;  /* -filter zero point */
    int32_t output_offset;  /* output zero point */
    int32_t act_min, act_max;
    int32_t per_channel;
    const MG_ROM int32_t *multiplier;
    const MG_ROM int32_t *shift;
} mg_fc_params_t;
void mg_fully_connected_s8(const MG_ROM mg_fc_params_t *p, const int8_t *input,
                           const MG_ROM int8_t *filter,
                           const MG_ROM int32_t *bias, int8_t *output);

/* DEPTHWISE_CONV_2D (TFLM DepthwiseConvPerChannel), NHWC: input [batches, in_h, in_w,
 * in_c], filter [1, filt_h, filt_w, out_c], bias [out_c] or NULL, output [batches, out_h,
 * out_w, out_c], out_c = in_c * depth_multiplier; per-output-channel multiplier/shift. */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t filt_h, filt_w;
    int32_t out_h, out_w, out_c;
    int32_t depth_multiplier;
    int32_t stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    const MG_ROM int32_t *multiplier;
    const MG_ROM int32_t *shift;
} mg_dwconv_params_t;
void mg_depthwise_conv_s8(const MG_ROM mg_dwconv_params_t *p, const int8_t *input,
                          const MG_ROM int8_t *filter, const MG_ROM int32_t *bias,
                          int8_t *output);

/* ADD / SUB (TFLM int8: inputs rescaled to a common 2^left_shift fixed point). */
typedef struct {
    int32_t left_shift;
    int32_t input1_offset, input1_multiplier, input1_shift;
    int32_t input2_offset, input2_multiplier, input2_shift;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
    mg_bcast_t bc;
} mg_add_params_t;
void mg_add_s8(const MG_ROM mg_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out);
void mg_sub_s8(const MG_ROM mg_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* MUL (TFLM int8). */
typedef struct {
    int32_t input1_offset, input2_offset;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
    mg_bcast_t bc;
} mg_mul_params_t;
void mg_mul_s8(const MG_ROM mg_mul_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* MINIMUM / MAXIMUM on raw int8 values (TFLM requires equal quantization). */
void mg_minimum_s8(const MG_ROM mg_bcast_t *bc, const int8_t *in1, const int8_t *in2, int8_t *out);
void mg_maximum_s8(const MG_ROM mg_bcast_t *bc, const int8_t *in1, const int8_t *in2, int8_t *out);

/* LOGISTIC (TFLM int8: Q4.27 gemmlowp logistic; output scale 1/256, zero point -128). */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t input_range_radius;
    int32_t input_multiplier;
    int32_t input_left_shift;
} mg_logistic_params_t;
void mg_logistic_s8(const MG_ROM mg_logistic_params_t *p, const int8_t *input, int8_t *output);

/* out = clamp(output_offset + MBQM(in - input_offset, multiplier, shift), act_min, act_max).
 * RELU (TFLM ReluQuantized: act_min from the output zero point) and
 * QUANTIZE int8->int8 (TFLM Requantize: act range -128..127) share this arithmetic.
 * In-place (output == input) is allowed. */
typedef struct {
    int32_t size;
    int32_t input_offset;   /* input zero point (subtracted) */
    int32_t output_offset;  /* output zero point (added) */
    int32_t multiplier, shift;
    int32_t act_min, act_max;
} mg_requant_params_t;
void mg_relu_s8(const MG_ROM mg_requant_params_t *p, const int8_t *input, int8_t *output);
void mg_requantize_s8(const MG_ROM mg_requant_params_t *p, const int8_t *input, int8_t *output);

/* CONCATENATION (TFLM int8: plain copy, all inputs share the output quantization).
 * outer = product of dims before the axis; input i contributes copy_bytes[i] bytes per
 * outer step (product of its dims from the axis on, times the element size). */
typedef struct {
    int32_t num_inputs;
    int32_t outer;
    const MG_ROM int32_t *copy_bytes;
} mg_concat_params_t;
void mg_concatenation(const MG_ROM mg_concat_params_t *p, const void *const *inputs, void *output);

/* GATHER (TFLM: int8 or int32 params, int32 indices). Returns 0, or -1 if an index is out
 * of [0, axis_size) (the output is then incomplete). */
typedef struct {
    int32_t batch_size, outer_size, axis_size, inner_size, coord_size;
    int32_t elem_bytes;
} mg_gather_params_t;
int mg_gather(const MG_ROM mg_gather_params_t *p, const void *params, const int32_t *indices,
              void *output);

/* RESHAPE when a copy is needed (the generator aliases buffers otherwise). */
void mg_copy(void *dst, const void *src, size_t bytes); /* memmove semantics */

#ifdef __cplusplus
}
#endif

#endif /* MG_KERNELS_H */
