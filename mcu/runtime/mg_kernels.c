/* mg_kernels.c - see mg_kernels.h. Integer arithmetic follows the TFLite-Micro reference
 * kernels (reference_integer_ops / reference_ops) operation by operation. */
#include "mg_kernels.h"

#include "mg_quant.h"

/* Byte copies without libc (the runtime also builds freestanding, e.g. for xtensa-lx106). */
static void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t k;
    for (k = 0; k < n; ++k) {
        dst[k] = src[k];
    }
}

static int32_t clamp32(int32_t v, int32_t lo, int32_t hi)
{
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return v;
}

/* Runs STMT for every output element i with input offsets i1, i2 under broadcast BC. */
#define MG_BINARY_LOOP(BC, STMT)                                                       \
    do {                                                                               \
        const mg_bcast_t *bc_ = (BC);                                                  \
        int32_t i;                                                                     \
        if (bc_->ndims == 0) {                                                         \
            for (i = 0; i < bc_->count; ++i) {                                         \
                const int32_t i1 = i;                                                  \
                const int32_t i2 = i;                                                  \
                STMT;                                                                  \
            }                                                                          \
        } else {                                                                       \
            int32_t idx_[MG_MAX_DIMS] = {0, 0, 0, 0, 0, 0};                            \
            int32_t o1_ = 0;                                                           \
            int32_t o2_ = 0;                                                           \
            for (i = 0; i < bc_->count; ++i) {                                         \
                int32_t d_;                                                            \
                {                                                                      \
                    const int32_t i1 = o1_;                                            \
                    const int32_t i2 = o2_;                                            \
                    STMT;                                                              \
                }                                                                      \
                for (d_ = bc_->ndims - 1; d_ >= 0; --d_) {                             \
                    ++idx_[d_];                                                        \
                    o1_ += bc_->stride1[d_];                                           \
                    o2_ += bc_->stride2[d_];                                           \
                    if (idx_[d_] < bc_->shape[d_]) {                                   \
                        break;                                                         \
                    }                                                                  \
                    o1_ -= bc_->stride1[d_] * bc_->shape[d_];                          \
                    o2_ -= bc_->stride2[d_] * bc_->shape[d_];                          \
                    idx_[d_] = 0;                                                      \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    } while (0)

void mg_fully_connected_s8(const mg_fc_params_t *p, const int8_t *input, const int8_t *filter,
                           const int32_t *bias, int8_t *output)
{
    int32_t b, oc, d;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in = input + b * p->accum_depth;
        for (oc = 0; oc < p->output_depth; ++oc) {
            const int8_t *w = filter + oc * p->accum_depth;
            const int32_t m = p->per_channel ? p->multiplier[oc] : p->multiplier[0];
            const int32_t s = p->per_channel ? p->shift[oc] : p->shift[0];
            int32_t acc = 0;
            if (p->per_channel) {
                for (d = 0; d < p->accum_depth; ++d) {
                    acc += (int32_t)w[d] * ((int32_t)in[d] + p->input_offset);
                }
            } else {
                for (d = 0; d < p->accum_depth; ++d) {
                    acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)in[d] + p->input_offset);
                }
            }
            if (bias) {
                acc += bias[oc];
            }
            acc = mg_mbqm(acc, m, (int)s) + p->output_offset;
            output[b * p->output_depth + oc] = (int8_t)clamp32(acc, p->act_min, p->act_max);
        }
    }
}

void mg_depthwise_conv_s8(const mg_dwconv_params_t *p, const int8_t *input,
                          const int8_t *filter, const int32_t *bias, int8_t *output)
{
    int32_t batch, oy, ox, ic, m, fy, fx;
    for (batch = 0; batch < p->batches; ++batch) {
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t in_x0 = ox * p->stride_w - p->pad_w;
                const int32_t in_y0 = oy * p->stride_h - p->pad_h;
                for (ic = 0; ic < p->in_c; ++ic) {
                    for (m = 0; m < p->depth_multiplier; ++m) {
                        const int32_t oc = m + ic * p->depth_multiplier;
                        int32_t acc = 0;
                        for (fy = 0; fy < p->filt_h; ++fy) {
                            const int32_t in_y = in_y0 + p->dilation_h * fy;
                            if (in_y < 0 || in_y >= p->in_h) {
                                continue;
                            }
                            for (fx = 0; fx < p->filt_w; ++fx) {
                                const int32_t in_x = in_x0 + p->dilation_w * fx;
                                int32_t iv, fv;
                                if (in_x < 0 || in_x >= p->in_w) {
                                    continue;
                                }
                                iv = input[((batch * p->in_h + in_y) * p->in_w + in_x) * p->in_c + ic];
                                fv = filter[(fy * p->filt_w + fx) * p->out_c + oc];
                                acc += fv * (iv + p->input_offset);
                            }
                        }
                        if (bias) {
                            acc += bias[oc];
                        }
                        acc = mg_mbqm(acc, p->multiplier[oc], (int)p->shift[oc]) + p->output_offset;
                        output[((batch * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
                            (int8_t)clamp32(acc, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}

static int32_t add_scale(const mg_add_params_t *p, int8_t x, int32_t offset, int32_t mult,
                         int32_t shift)
{
    const int32_t v = (offset + (int32_t)x) * ((int32_t)1 << p->left_shift);
    return mg_mbqm_smaller_than_one(v, mult, (int)shift);
}

static int8_t add_finish(const mg_add_params_t *p, int32_t raw)
{
    const int32_t out = mg_mbqm_smaller_than_one(raw, p->output_multiplier, (int)p->output_shift)
                        + p->output_offset;
    return (int8_t)clamp32(out, p->act_min, p->act_max);
}

void mg_add_s8(const mg_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(&p->bc,
                   out[i] = add_finish(p, add_scale(p, in1[i1], p->input1_offset,
                                                    p->input1_multiplier, p->input1_shift)
                                          + add_scale(p, in2[i2], p->input2_offset,
                                                      p->input2_multiplier, p->input2_shift)));
}

void mg_sub_s8(const mg_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(&p->bc,
                   out[i] = add_finish(p, add_scale(p, in1[i1], p->input1_offset,
                                                    p->input1_multiplier, p->input1_shift)
                                          - add_scale(p, in2[i2], p->input2_offset,
                                                      p->input2_multiplier, p->input2_shift)));
}

static int8_t mul_one(const mg_mul_params_t *p, int8_t a, int8_t b)
{
    const int32_t v1 = p->input1_offset + (int32_t)a;
    const int32_t v2 = p->input2_offset + (int32_t)b;
    const int32_t out = p->output_offset
                        + mg_mbqm(v1 * v2, p->output_multiplier, (int)p->output_shift);
    return (int8_t)clamp32(out, p->act_min, p->act_max);
}

void mg_mul_s8(const mg_mul_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(&p->bc, out[i] = mul_one(p, in1[i1], in2[i2]));
}

void mg_minimum_s8(const mg_bcast_t *bc, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(bc, out[i] = in1[i1] < in2[i2] ? in1[i1] : in2[i2]);
}

void mg_maximum_s8(const mg_bcast_t *bc, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(bc, out[i] = in1[i1] > in2[i2] ? in1[i1] : in2[i2]);
}

void mg_logistic_s8(const mg_logistic_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t x = (int32_t)input[i] - p->input_zero_point;
        if (x <= -p->input_range_radius) {
            output[i] = -128;
        } else if (x >= p->input_range_radius) {
            output[i] = 127;
        } else {
            const int32_t x_q4 = mg_mbqm(x, p->input_multiplier, (int)p->input_left_shift);
            const int32_t y_q0 = mg_logistic_q4(x_q4);
            const int32_t y = mg_rdbpot(y_q0, 31 - 8) - 128;
            output[i] = (int8_t)clamp32(y, -128, 127);
        }
    }
}

void mg_requantize_s8(const mg_requant_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t v = p->output_offset
                          + mg_mbqm((int32_t)input[i] - p->input_offset, p->multiplier,
                                    (int)p->shift);
        output[i] = (int8_t)clamp32(v, p->act_min, p->act_max);
    }
}

void mg_relu_s8(const mg_requant_params_t *p, const int8_t *input, int8_t *output)
{
    mg_requantize_s8(p, input, output);
}

void mg_concatenation(const mg_concat_params_t *p, const void *const *inputs, void *output)
{
    uint8_t *out = (uint8_t *)output;
    int32_t k, i;
    for (k = 0; k < p->outer; ++k) {
        for (i = 0; i < p->num_inputs; ++i) {
            const int32_t n = p->copy_bytes[i];
            const uint8_t *src = (const uint8_t *)inputs[i] + (size_t)k * (size_t)n;
            copy_bytes(out, src, (size_t)n);
            out += n;
        }
    }
}

int mg_gather(const mg_gather_params_t *p, const void *params, const int32_t *indices,
              void *output)
{
    const uint8_t *in = (const uint8_t *)params;
    uint8_t *out = (uint8_t *)output;
    const size_t row = (size_t)p->inner_size * (size_t)p->elem_bytes;
    int32_t b, o, c;
    int status = 0;
    for (b = 0; b < p->batch_size; ++b) {
        for (o = 0; o < p->outer_size; ++o) {
            const int32_t base = (b * p->outer_size + o) * p->axis_size;
            for (c = 0; c < p->coord_size; ++c) {
                const int32_t idx = indices[b * p->coord_size + c];
                uint8_t *dst = out + (size_t)((b * p->outer_size + o) * p->coord_size + c) * row;
                if (idx < 0 || idx >= p->axis_size) {
                    size_t z;
                    for (z = 0; z < row; ++z) {
                        dst[z] = 0;
                    }
                    status = -1;
                    continue;
                }
                copy_bytes(dst, in + (size_t)(base + idx) * row, row);
            }
        }
    }
    return status;
}

void mg_copy(void *dst, const void *src, size_t bytes)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    size_t k;
    if (d == s || bytes == 0) {
        return;
    }
    if (d < s) {
        copy_bytes(d, s, bytes);
    } else {
        for (k = bytes; k > 0; --k) {
            d[k - 1] = s[k - 1];
        }
    }
}
