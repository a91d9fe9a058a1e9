/* mg_quant.c - see mg_quant.h. Written from the documented TFLite/gemmlowp semantics. */
#include "mg_quant.h"

#define MG_INT32_MAX ((int32_t)0x7FFFFFFF)
#define MG_INT32_MIN ((int32_t)(-MG_INT32_MAX - 1))

/* Wrapping int32 multiply by 2^s (the C++ reference writes x * (1 << s)). */
static int32_t shl_wrap(int32_t x, int s)
{
    return (int32_t)((uint32_t)x << s);
}

int32_t mg_srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == MG_INT32_MIN && b == MG_INT32_MIN) {
        return MG_INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* Division truncates toward zero, as in the reference (not a shift). */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

int32_t mg_rdbpot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t mg_mbqm(int32_t x, int32_t quantized_multiplier, int shift)
{
#if MG_SINGLE_ROUNDING
    const int total_shift = 31 - shift;
    const int64_t round = (int64_t)1 << (total_shift - 1);
    const int64_t result = (int64_t)x * (int64_t)quantized_multiplier + round;
    return (int32_t)(result >> total_shift);
#else
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    return mg_rdbpot(mg_srdhm(shl_wrap(x, left_shift), quantized_multiplier), right_shift);
#endif
}

int32_t mg_mbqm_smaller_than_one(int32_t x, int32_t quantized_multiplier, int shift)
{
#if MG_SINGLE_ROUNDING
    return mg_mbqm(x, quantized_multiplier, shift);
#else
    return mg_rdbpot(mg_srdhm(x, quantized_multiplier), -shift);
#endif
}

/* ---- gemmlowp fixed-point logistic, specialised to int32 raw values ---------------- */

/* Saturating x * 2^e for e > 0 (gemmlowp SaturatingRoundingMultiplyByPOT, positive). */
static int32_t sat_shl(int32_t x, int e)
{
    const int32_t threshold = (int32_t)(((int64_t)1 << (31 - e)) - 1);
    if (x > threshold) {
        return MG_INT32_MAX;
    }
    if (x < -threshold) {
        return MG_INT32_MIN;
    }
    return shl_wrap(x, e);
}

/* (a + b) / 2 rounded away from zero, computed in 64 bits. */
static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + (int64_t)b;
    const int64_t sign = sum >= 0 ? 1 : -1;
    return (int32_t)((sum + sign) / 2);
}

/* exp(a) for a in [-1/4, 0), a and result in Q0.31. */
static int32_t exp_quarter_interval(int32_t a)
{
    const int32_t constant_term = 1895147668;     /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;  /* 1/3 */
    const int32_t x = a + ((int32_t)1 << 28);     /* a + 1/8 */
    const int32_t x2 = mg_srdhm(x, x);
    const int32_t x3 = mg_srdhm(x2, x);
    const int32_t x4 = mg_srdhm(x2, x2);
    const int32_t x4_over_4 = mg_rdbpot(x4, 2);
    const int32_t poly = mg_rdbpot(mg_srdhm(x4_over_4 + x3, constant_1_over_3) + x2, 1);
    return constant_term + mg_srdhm(constant_term, x + poly);
}

/* exp(a) for a <= 0 given in Q4.27; result Q0.31. */
static int32_t exp_on_negative_values_q4(int32_t a)
{
    enum { kIntegerBits = 4, kFractionalBits = 27 };
    static const int32_t barrel[6] = {
        1672461947, /* exp(-1/4) */
        1302514674, /* exp(-1/2) */
        790015084,  /* exp(-1)   */
        290630308,  /* exp(-2)   */
        39332535,   /* exp(-4)   */
        720401      /* exp(-8)   */
    };
    const int32_t one_quarter = (int32_t)1 << (kFractionalBits - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t a_mod_quarter_minus_quarter = (a & mask) - one_quarter;
    int32_t result = exp_quarter_interval(sat_shl(a_mod_quarter_minus_quarter, kIntegerBits));
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    int k;
    /* exponents -2 .. +3 (only those < kIntegerBits) */
    for (k = 0; k < 6; ++k) {
        const int shift_amount = kFractionalBits + (k - 2);
        if (remainder & ((int32_t)1 << shift_amount)) {
            result = mg_srdhm(result, barrel[k]);
        }
    }
    if (a == 0) {
        result = MG_INT32_MAX;
    }
    return result;
}

/* 1 / (1 + a) for a in (0, 1), Q0.31 in and out (Newton-Raphson, 3 iterations). */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int32_t half_denominator = rounding_half_sum(a, MG_INT32_MAX);
    const int32_t constant_48_over_17 = 1515870810;    /* Q2.29 */
    const int32_t constant_neg_32_over_17 = -1010580540; /* Q2.29 */
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = constant_48_over_17 + mg_srdhm(half_denominator, constant_neg_32_over_17);
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x = mg_srdhm(half_denominator, x);
        const int32_t one_minus = one_q2 - half_denominator_times_x;
        x = x + sat_shl(mg_srdhm(x, one_minus), 2);
    }
    /* x / 2, reinterpreted Q1.30 -> Q0.31 */
    return sat_shl(x, 1);
}

int32_t mg_logistic_q4(int32_t x)
{
    int32_t abs_x;
    int32_t pos;
    if (x == 0) {
        return (int32_t)1 << 30;
    }
    abs_x = x > 0 ? x : -x;
    pos = one_over_one_plus_x(exp_on_negative_values_q4(-abs_x));
    return x > 0 ? pos : MG_INT32_MAX - pos;
}
