/* mg_kernels.c - see mg_kernels.h. Integer arithmetic follows the TFLite-Micro reference
 * kernels (reference_integer_ops / reference_ops) operation by operation. */
#include "mg_kernels.h"

#include "mg_elem.h"
#include "mg_quant.h"

/* Byte copies without libc (the runtime also builds freestanding, e.g. for xtensa-lx106). */
static void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t k;
    for (k = 0; k < n; ++k) {
        dst[k] = src[k];
    }
}

/* Runs STMT for every output element i with input offsets i1, i2 under broadcast BC. */
#define MG_BINARY_LOOP(BC, STMT)                                                       \
    do {                                                                               \
        const MG_ROM mg_bcast_t *bc_ = (BC);                                                  \
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

void mg_fully_connected_s8(const MG_ROM mg_fc_params_t *p, const int8_t *input,
                           const MG_ROM int8_t *filter,
                           const MG_ROM int32_t *bias, int8_t *output)
{
    mg_fc_rows(p, 0, input, (const int16_t *)0, filter, bias, output, (int16_t *)0);
}

void mg_depthwise_conv_s8(const MG_ROM mg_dwconv_params_t *p, const int8_t *input,
                          const MG_ROM int8_t *filter, const MG_ROM int32_t *bias,
                          int8_t *output)
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
                        output[((batch * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
                            mg_requant_clamp1(acc, p->multiplier[oc], p->shift[oc],
                                              p->output_offset, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}

void mg_add_s8(const MG_ROM mg_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(&p->bc, out[i] = mg_add1_s8(p, in1[i1], in2[i2]));
}

void mg_sub_s8(const MG_ROM mg_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(&p->bc, out[i] = mg_sub1_s8(p, in1[i1], in2[i2]));
}

void mg_mul_s8(const MG_ROM mg_mul_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(&p->bc, out[i] = mg_mul1_s8(p, in1[i1], in2[i2]));
}

void mg_minimum_s8(const MG_ROM mg_bcast_t *bc, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(bc, out[i] = in1[i1] < in2[i2] ? in1[i1] : in2[i2]);
}

void mg_maximum_s8(const MG_ROM mg_bcast_t *bc, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    MG_BINARY_LOOP(bc, out[i] = in1[i1] > in2[i2] ? in1[i1] : in2[i2]);
}

void mg_logistic_s8(const MG_ROM mg_logistic_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        output[i] = mg_logistic1_s8(p, input[i]);
    }
}

void mg_requantize_s8(const MG_ROM mg_requant_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        output[i] = mg_requant1_s8(p, input[i]);
    }
}

void mg_relu_s8(const MG_ROM mg_requant_params_t *p, const int8_t *input, int8_t *output)
{
    mg_requantize_s8(p, input, output);
}

void mg_concatenation(const MG_ROM mg_concat_params_t *p, const void *const *inputs, void *output)
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

int mg_gather(const MG_ROM mg_gather_params_t *p, const void *params, const int32_t *indices,
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
