/* mg_test_baremetal.c - what the bare-metal test platforms share, #included by each
 * platform.c (tests/qemu, tests/rv32, tests/xtensa) after its own definitions: the harness
 * builds list one platform file a target, so this is no translation unit of its own.
 *
 * Always: mg_test_calibrate, 10^6 turns of a two-instruction count-down loop timed with the
 * platform's mg_test_ticks / mg_test_ticks_since.
 * MG_TEST_UP_TICKS (a free-running up-counter that needs no set-up: RISC-V instret, Xtensa
 * CCOUNT): mg_test_platform_init (nothing) and mg_test_ticks_since.
 * MG_TEST_SEMIHOST (Arm and RISC-V semihosting take the same operation numbers; the platform
 * defines `static uint32_t semihost(uint32_t op, uintptr_t arg)` and links with the boards'
 * sections, which define _sidata .. _estack): mg_test_puts, mg_test_exit, mg_test_fault
 * (prints the harness's fault line), the painted stack (mg_test_stack_paint from the stack
 * pointer sp of the start-up code, mg_test_stack_used) and mg_test_start (the C start-up:
 * .data copied, .bss cleared, main run, its status the exit code). */
#include <stdint.h>

#include "mg_test_platform.h"

uint32_t mg_test_calibrate(uint32_t *instructions)
{
    const uint32_t n = 1000000u;
    uint32_t t0, r = n;
    t0 = mg_test_ticks();
#if defined(__arm__) && __ARM_ARCH_ISA_THUMB == 1  /* Armv6-M: GCC passes Thumb-1 inline asm
                                                   * in divided syntax */
    __asm__ volatile("1: sub %0, #1\n\tbne 1b" : "+r"(r) : : "cc");
#elif defined(__arm__)
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(r) : : "cc");
#else                                              /* RISC-V, Xtensa */
    __asm__ volatile("1: addi %0, %0, -1\n\tbnez %0, 1b" : "+r"(r));
#endif
    *instructions = 2u * n;
    return mg_test_ticks_since(t0);
}

#ifdef MG_TEST_UP_TICKS
void mg_test_platform_init(void)
{
}

uint32_t mg_test_ticks_since(uint32_t start)
{
    return mg_test_ticks() - start;
}
#endif

#ifdef MG_TEST_SEMIHOST
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;

int main(void);

#define STACK_PAINT 0xC5C5C5C5u

void mg_test_puts(const char *s)
{
    (void)semihost(0x04u, (uintptr_t)s);      /* SYS_WRITE0 */
}

void mg_test_exit(int code)
{
    /* SYS_EXIT: ADP_Stopped_ApplicationExit -> status 0, anything else -> status 1 */
    (void)semihost(0x18u, code == 0 ? 0x20026u : 0x20024u);
    for (;;) {
    }
}

static void mg_test_fault(void)
{
    mg_test_puts("MGCHECK fault\n");
    mg_test_exit(2);
}

/* Stack high-water mark: the stack region below the start-up code's stack pointer is painted
 * at reset; the deepest word no longer holding the pattern gives the bytes ever used. */
static void mg_test_stack_paint(uint32_t *sp)
{
    uint32_t *p = &_sstack;
    while (p < sp - 16) {
        *p++ = STACK_PAINT;
    }
}

uint32_t mg_test_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

static void mg_test_start(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0u;
    }
    mg_test_exit(main());
}
#endif
