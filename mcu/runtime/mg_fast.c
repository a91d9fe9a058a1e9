/* mg_fast.c - see mg_fast.h. Every function here is checked byte for byte against the
 * reference kernels (tests/test_fast_kernels.py) and, in whole models, against TFLite-Micro. */
#include "mg_fast.h"

void mg_ffc_expand(const int8_t *x, int32_t depth, uint32_t *xq)
{
    int32_t k = 0;
    for (; k + 4 <= depth; k += 4) {
        const uint32_t xw = mg_fload4(x + k);
        const uint32_t p = mg_ssub16(mg_sxtb16(xw >> 8), 0x007F007Fu);  /* x1-127, x3-127 */
        xq[0] = mg_ssub16(mg_uxtb16(xw) << 8, p);                        /* 256 x0 - p0 ... */
        xq[1] = p;
        xq += 2;
    }
    if (k < depth) {   /* tail block: missing inputs read as 0 (their weights are 0) */
        int8_t t[4] = {0, 0, 0, 0};
        int32_t j;
        for (j = 0; k + j < depth; ++j) {
            t[j] = x[k + j];
        }
        {
            const uint32_t xw = (uint32_t)(uint8_t)t[0] | ((uint32_t)(uint8_t)t[1] << 8) |
                                ((uint32_t)(uint8_t)t[2] << 16) | ((uint32_t)(uint8_t)t[3] << 24);
            const uint32_t p = mg_ssub16(mg_sxtb16(xw >> 8), 0x007F007Fu);
            xq[0] = mg_ssub16(mg_uxtb16(xw) << 8, p);
            xq[1] = p;
        }
    }
}

/* One block of the assembly loop below: R, P; the 4 channels' words; 2 SMLAD each. */
#define MG_DOT_BLOCK_ASM                                                                     \
    "    ldrd    r12, lr, [r0], #8\n"                                                        \
    "    ldmia   r1!, {r8, r9, r10, r11}\n"                                                  \
    "    smlad   r4, r8, lr, r4\n"                                                           \
    "    sxtb16  r8, r8\n"                                                                   \
    "    smlad   r4, r8, r12, r4\n"                                                          \
    "    smlad   r5, r9, lr, r5\n"                                                           \
    "    sxtb16  r9, r9\n"                                                                   \
    "    smlad   r5, r9, r12, r5\n"                                                          \
    "    smlad   r6, r10, lr, r6\n"                                                          \
    "    sxtb16  r10, r10\n"                                                                 \
    "    smlad   r6, r10, r12, r6\n"                                                         \
    "    smlad   r7, r11, lr, r7\n"                                                          \
    "    sxtb16  r11, r11\n"                                                                 \
    "    smlad   r7, r11, r12, r7\n"

#if MG_DSP_NATIVE
/* One block (4 inputs) of the 4 channels of a group into a0..a3. */
#define MG_DOT_BLOCK(XQ, WP)                                                                 \
    do {                                                                                     \
        const uint32_t r_ = (XQ)[0], p_ = (XQ)[1];                                           \
        const uint32_t w0_ = (WP)[0], w1_ = (WP)[1], w2_ = (WP)[2], w3_ = (WP)[3];           \
        a0 = mg_smlad(mg_sxtb16(w0_), r_, mg_smlad(w0_, p_, a0));                            \
        a1 = mg_smlad(mg_sxtb16(w1_), r_, mg_smlad(w1_, p_, a1));                            \
        a2 = mg_smlad(mg_sxtb16(w2_), r_, mg_smlad(w2_, p_, a2));                            \
        a3 = mg_smlad(mg_sxtb16(w3_), r_, mg_smlad(w3_, p_, a3));                            \
    } while (0)
#else
/* Without the DSP instructions: the same four products per word, SMLAD(W, P) +
 * SMLAD(SXTB16(W), R) = h0 P0 + h1 P1 + b0 R0 + b2 R1 (h: the word's halfwords, b0, b2: its
 * bytes 0 and 2), with the block's input halfwords read once for the 4 channels; summed
 * modulo 2^32 like SMLAD (the final sums are exact, generator-checked). On Armv7-M (Cortex-M3)
 * the parts are sign-extending halfword / byte loads (little-endian); elsewhere (Armv6-M,
 * RV32, Xtensa, the host) shifts of the loaded word, which measured faster there. */
#if defined(__ARM_ARCH_7M__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline int32_t mg_half(const uint32_t *p, int k)     /* halfword k of the words at p */
{
    int16_t h;
    __builtin_memcpy(&h, (const char *)p + 2 * k, 2);
    return h;
}
#define MG_BYTE(P, K) ((int32_t)((const int8_t *)(P))[K])
#else
#define mg_half(P, K) ((int32_t)(int16_t)(((P)[(K) >> 1] >> (16 * ((K) & 1))) & 0xFFFFu))
#define MG_BYTE(P, K) ((int32_t)(int8_t)(((P)[(K) >> 2] >> (8 * ((K) & 3))) & 0xFFu))
#endif
#define MG_DOT_WORD(A, WP, J)                                                                \
    (A) = (int32_t)((uint32_t)(A) + (uint32_t)(mg_half((WP), 2 * (J)) * p0_)                  \
                    + (uint32_t)(mg_half((WP), 2 * (J) + 1) * p1_)                             \
                    + (uint32_t)(MG_BYTE((WP), 4 * (J)) * r0_)                                 \
                    + (uint32_t)(MG_BYTE((WP), 4 * (J) + 2) * r1_))
#define MG_DOT_BLOCK(XQ, WP)                                                                 \
    do {                                                                                     \
        const int32_t r0_ = mg_half((XQ), 0), r1_ = mg_half((XQ), 1);                        \
        const int32_t p0_ = mg_half((XQ), 2), p1_ = mg_half((XQ), 3);                        \
        MG_DOT_WORD(a0, (WP), 0);                                                            \
        MG_DOT_WORD(a1, (WP), 1);                                                            \
        MG_DOT_WORD(a2, (WP), 2);                                                            \
        MG_DOT_WORD(a3, (WP), 3);                                                            \
    } while (0)
#endif

#if MG_FFC_DOT_ASM
/* The frame of the two 4-row group loops below (mg_ffc_dot, mg_fdot16_w16), BLOCK, SETUP
 * and FINISH their own. AAPCS: r2 blocks, r3 groups, [sp] d; after SETUP r0 points at the
 * input blocks (8 bytes each) and r1 at the weights. Per group: sums r4-r7 zeroed, BLOCK
 * (which advances r0 and r1) four times a turn for blocks / 4 turns then once a turn for
 * blocks % 4, r0 rewound to the first input block, FINISH on r4-r7, the 4 sums stored to d.
 * r3 counts the turns in the loop; groups and d live on the stack (d at [sp, #44]). */
#define MG_GROUPS4_ASM(SETUP, BLOCK, FINISH)                                                 \
    "    push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n"                                   \
    "    cmp     r3, #0\n"                                                                   \
    "    ble     9f\n"                                                                       \
    "    sub     sp, sp, #8\n"                                                               \
    "    str     r3, [sp]\n"                 /* groups left */                               \
    SETUP                                                                                    \
    "1:  movs    r4, #0\n"                                                                   \
    "    movs    r5, #0\n"                                                                   \
    "    movs    r6, #0\n"                                                                   \
    "    movs    r7, #0\n"                                                                   \
    "    lsrs    r3, r2, #2\n"               /* four blocks a turn */                        \
    "    beq     3f\n"                                                                       \
    "2:\n"                                                                                   \
    BLOCK BLOCK BLOCK BLOCK                                                                  \
    "    subs    r3, r3, #1\n"                                                               \
    "    bne     2b\n"                                                                       \
    "3:  ands    r3, r2, #3\n"                                                               \
    "    beq     5f\n"                                                                       \
    "4:\n"                                                                                   \
    BLOCK                                                                                    \
    "    subs    r3, r3, #1\n"                                                               \
    "    bne     4b\n"                                                                       \
    "5:  sub     r0, r0, r2, lsl #3\n"       /* back to the first input block */             \
    FINISH                                                                                   \
    "    ldr     r3, [sp, #44]\n"                                                            \
    "    stmia   r3!, {r4, r5, r6, r7}\n"                                                    \
    "    str     r3, [sp, #44]\n"                                                            \
    "    ldr     r3, [sp]\n"                                                                 \
    "    subs    r3, r3, #1\n"                                                               \
    "    str     r3, [sp]\n"                                                                 \
    "    bne     1b\n"                                                                       \
    "    add     sp, sp, #8\n"                                                               \
    "9:  pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n"

/* The same loop in Thumb-2 for cores with the DSP extension: one LDRD for the block's input
 * pair (R, P) and one LDM for the group's 4 weight words, then per channel SMLAD(W, P),
 * SXTB16(W), SMLAD(W', R): 14 instructions per 16 MACs (the C loop: 18, GCC loads each word
 * with its own LDR). AAPCS: r0 xq0, r1 wp, r2 blocks, r3 groups, [sp] d. Registers in the
 * loop: r0 xq, r1 wp, r2 blocks, r3 count, r4-r7 the accumulators, r8-r11 the weight words,
 * r12 R, lr P; groups and d live on the stack. */
#define MG_ARG __attribute__((unused))   /* read by the assembly, not by C */
__attribute__((naked, noinline)) void mg_ffc_dot(const uint32_t *xq0 MG_ARG,
                                                 const uint32_t *wp MG_ARG,
                                                 int32_t blocks MG_ARG, int32_t groups MG_ARG,
                                                 int32_t *d MG_ARG)
{
    __asm__(MG_GROUPS4_ASM("", MG_DOT_BLOCK_ASM,
                           "    asrs    r4, r4, #8\n"      /* exact: 256 |dot| < 2^31 */
                           "    asrs    r5, r5, #8\n"
                           "    asrs    r6, r6, #8\n"
                           "    asrs    r7, r7, #8\n"));
}
/* One block of mg_fdot16_rows4: row pointer RP (post-incremented), accumulator ACC. */
#define MG_DOT16_ROW_ASM(RP, ACC)                                                            \
    "    ldr     r12, [" RP "], #4\n"                                                        \
    "    sxtb16  lr, r12\n"                                                                  \
    "    smlad   " ACC ", lr, r10, " ACC "\n"                                                 \
    "    sxtb16  lr, r12, ror #8\n"                                                          \
    "    smlad   " ACC ", lr, r11, " ACC "\n"
#define MG_DOT16_BLOCK_ASM                                                                   \
    "    ldrd    r10, r11, [r0], #8\n"                                                       \
    MG_DOT16_ROW_ASM("r1", "r6") MG_DOT16_ROW_ASM("r2", "r7")                                 \
    MG_DOT16_ROW_ASM("r3", "r8") MG_DOT16_ROW_ASM("r4", "r9")

/* AAPCS: r0 w, r1 xs, r2 depth, r3 groups, [sp] d. In the loop: r0 xs, r1-r4 the 4 rows,
 * r5 count, r6-r9 the sums, r10/r11 the packed inputs, r12 a weight word, lr its halves;
 * xs, depth, groups on the stack (d at [sp, #52]). */
__attribute__((naked, noinline)) void mg_fdot16_rows4(const int8_t *w MG_ARG,
                                                      const uint32_t *xs MG_ARG,
                                                      int32_t depth MG_ARG,
                                                      int32_t groups MG_ARG,
                                                      int32_t *d MG_ARG)
{
    __asm__(
        "    push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n"
        "    cmp     r3, #0\n"
        "    ble     9f\n"
        "    sub     sp, sp, #16\n"
        "    str     r1, [sp]\n"
        "    str     r2, [sp, #4]\n"
        "    str     r3, [sp, #8]\n"
        "    mov     r1, r0\n"                   /* row 0 of the group */
        "1:  ldr     r0, [sp]\n"
        "    ldr     r5, [sp, #4]\n"
        "    add     r2, r1, r5\n"
        "    add     r3, r2, r5\n"
        "    add     r4, r3, r5\n"
        "    mov     r6, #0\n"
        "    mov     r7, #0\n"
        "    mov     r8, #0\n"
        "    mov     r9, #0\n"
        "    lsrs    r5, r5, #3\n"               /* two blocks a turn */
        "    beq     3f\n"
        "2:\n"
        MG_DOT16_BLOCK_ASM MG_DOT16_BLOCK_ASM
        "    subs    r5, r5, #1\n"
        "    bne     2b\n"
        "3:  ldr     r5, [sp, #4]\n"
        "    tst     r5, #4\n"                   /* an odd block left */
        "    beq     4f\n"
        MG_DOT16_BLOCK_ASM
        "4:  ldr     r5, [sp, #52]\n"
        "    stmia   r5!, {r6, r7, r8, r9}\n"
        "    str     r5, [sp, #52]\n"
        "    ldr     r5, [sp, #4]\n"
        "    and     r5, r5, #3\n"
        "    add     r1, r4, r5\n"               /* next group's row 0 = row 3 + depth */
        "    ldr     r5, [sp, #8]\n"
        "    subs    r5, r5, #1\n"
        "    str     r5, [sp, #8]\n"
        "    bne     1b\n"
        "    add     sp, sp, #16\n"
        "9:  pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n");
}

/* One block of mg_fdot16_w16: the packed input pair, then 2 rows per LDM of 4 words. */
#define MG_DOT16W_PAIR_ASM(A, B)                                                             \
    "    ldmia   r1!, {r8, r9, r10, r11}\n"                                                  \
    "    smlad   " A ", r8, r12, " A "\n"                                                     \
    "    smlad   " A ", r9, lr, " A "\n"                                                      \
    "    smlad   " B ", r10, r12, " B "\n"                                                    \
    "    smlad   " B ", r11, lr, " B "\n"
#define MG_DOT16W_BLOCK_ASM                                                                  \
    "    ldrd    r12, lr, [r0], #8\n"                                                         \
    MG_DOT16W_PAIR_ASM("r4", "r5") MG_DOT16W_PAIR_ASM("r6", "r7")

/* AAPCS: r0 xs, r1 w16, r2 blocks, r3 groups, [sp] d. In the loop: r0 xs, r1 w16, r2 blocks,
 * r3 count, r4-r7 the sums, r8-r11 two rows' weight words, r12 (u0, u2), lr (u1, u3); groups
 * and d on the stack (d at [sp, #44]). The sums wrap like SMLAD; |sum| < 2^30 is
 * generator-checked. */
__attribute__((naked, noinline)) void mg_fdot16_w16(const uint32_t *w16 MG_ARG,
                                                    const uint32_t *xs MG_ARG,
                                                    int32_t blocks MG_ARG, int32_t groups MG_ARG,
                                                    int32_t *d MG_ARG)
{
    __asm__(MG_GROUPS4_ASM("    mov     r12, r0\n"      /* (w16, xs) -> (xs, w16) */
                           "    mov     r0, r1\n"
                           "    mov     r1, r12\n",
                           MG_DOT16W_BLOCK_ASM, ""));
}
#else
/* The C loop (no DSP extension, or -DMG_FFC_DOT_C): with native SMLAD four blocks (16 inputs
 * x 4 channels) a turn, then one; without, one block a turn throughout (fewer live
 * registers). */
void mg_ffc_dot(const uint32_t *xq0, const uint32_t *wp, int32_t blocks, int32_t groups,
                int32_t *d)
{
    for (; groups > 0; --groups, d += 4) {
        const uint32_t *xq = xq0;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int32_t k = blocks;
#if MG_DSP_NATIVE
        for (k = blocks >> 2; k > 0; --k) {
            MG_DOT_BLOCK(xq, wp);
            MG_DOT_BLOCK(xq + 2, wp + 4);
            MG_DOT_BLOCK(xq + 4, wp + 8);
            MG_DOT_BLOCK(xq + 6, wp + 12);
            xq += 8;
            wp += 16;
        }
        k = blocks & 3;
#endif
        for (; k > 0; --k) {
            MG_DOT_BLOCK(xq, wp);
            xq += 2;
            wp += 4;
        }
        d[0] = a0 >> 8;     /* exact: 256 * |dot| < 2^31 (generator-checked) */
        d[1] = a1 >> 8;
        d[2] = a2 >> 8;
        d[3] = a3 >> 8;
    }
}
#endif

void mg_fpack16(const int16_t *u16, int32_t depth, uint32_t *xs)
{
    int32_t k;
    for (k = 0; k + 4 <= depth; k += 4) {
        xs[0] = (uint32_t)(uint16_t)u16[k] | ((uint32_t)(uint16_t)u16[k + 2] << 16);
        xs[1] = (uint32_t)(uint16_t)u16[k + 1] | ((uint32_t)(uint16_t)u16[k + 3] << 16);
        xs += 2;
    }
}
