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
    /* 32-bit arithmetic (no 64-bit shift: a library call on 8-bit cores); exponent <= 31 */
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
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

/* ---- int16 LOGISTIC table ------------------------------------------------------------ */

/* sigmoid(i / 24) for i = 0..255 in unsigned 0.16 fixed point, as TFLite's int16 LOGISTIC
 * holds it (43 entries differ by one from round(65536 * sigmoid(i / 24))): the values of
 * convert/state16.SIGMOID_LUT16, recovered from TFLite-Micro's outputs (tests/test_state16.py
 * checks the two agree and the arithmetic against TFLite-Micro). */
const MG_ROM uint16_t mg_sigmoid_lut16[256] = {
    32768u, 33451u, 34133u, 34813u, 35493u, 36169u, 36843u, 37513u, 38180u, 38841u, 39498u, 40149u,
    40794u, 41432u, 42064u, 42688u, 43304u, 43912u, 44511u, 45102u, 45683u, 46255u, 46817u, 47369u,
    47911u, 48443u, 48964u, 49475u, 49975u, 50464u, 50942u, 51409u, 51865u, 52311u, 52745u, 53169u,
    53581u, 53983u, 54374u, 54755u, 55125u, 55485u, 55834u, 56174u, 56503u, 56823u, 57133u, 57433u,
    57724u, 58007u, 58280u, 58544u, 58800u, 59048u, 59288u, 59519u, 59743u, 59959u, 60168u, 60370u,
    60565u, 60753u, 60935u, 61110u, 61279u, 61441u, 61599u, 61750u, 61896u, 62036u, 62172u, 62302u,
    62428u, 62549u, 62666u, 62778u, 62886u, 62990u, 63090u, 63186u, 63279u, 63368u, 63454u, 63536u,
    63615u, 63691u, 63765u, 63835u, 63903u, 63968u, 64030u, 64090u, 64148u, 64204u, 64257u, 64308u,
    64357u, 64405u, 64450u, 64494u, 64536u, 64576u, 64614u, 64652u, 64687u, 64721u, 64754u, 64786u,
    64816u, 64845u, 64873u, 64900u, 64926u, 64950u, 64974u, 64997u, 65019u, 65039u, 65060u, 65079u,
    65097u, 65115u, 65132u, 65149u, 65164u, 65179u, 65194u, 65208u, 65221u, 65234u, 65246u, 65258u,
    65269u, 65280u, 65291u, 65301u, 65310u, 65319u, 65328u, 65337u, 65345u, 65352u, 65360u, 65367u,
    65374u, 65381u, 65387u, 65393u, 65399u, 65404u, 65410u, 65415u, 65420u, 65425u, 65429u, 65433u,
    65438u, 65442u, 65445u, 65449u, 65453u, 65456u, 65459u, 65462u, 65465u, 65468u, 65471u, 65474u,
    65476u, 65479u, 65481u, 65483u, 65485u, 65488u, 65489u, 65491u, 65493u, 65495u, 65497u, 65498u,
    65500u, 65501u, 65503u, 65504u, 65505u, 65507u, 65508u, 65509u, 65510u, 65511u, 65512u, 65513u,
    65514u, 65515u, 65516u, 65517u, 65517u, 65518u, 65519u, 65520u, 65520u, 65521u, 65522u, 65522u,
    65523u, 65523u, 65524u, 65524u, 65525u, 65525u, 65526u, 65526u, 65526u, 65527u, 65527u, 65528u,
    65528u, 65528u, 65529u, 65529u, 65529u, 65529u, 65530u, 65530u, 65530u, 65530u, 65531u, 65531u,
    65531u, 65531u, 65531u, 65532u, 65532u, 65532u, 65532u, 65532u, 65532u, 65533u, 65533u, 65533u,
    65533u, 65533u, 65533u, 65533u, 65533u, 65534u, 65534u, 65534u, 65534u, 65534u, 65534u, 65534u,
    65534u, 65534u, 65534u, 65534u
};
