/* Minimal bare-metal test platform for the harness on the QEMU Cortex-M boards (M0 to M55):
 * vector table, reset handler (.data copy, .bss clear, FPU enable where the core has one),
 * SysTick as a tick counter, ARM semihosting for output and exit. Only for
 * mcu/runtime/tests/model_check.c; the firmware uses the board port under mcu/boards/. It
 * links with the boards' sections (mcu/boards/qemu-shared/sections.ld + the board's
 * memory.ld), which define the stack region [_sstack, _estack). */
#include <stdint.h>

#include "../mg_test_platform.h"

int main(void);

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;

#define REG(a) (*(volatile uint32_t *)(a))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define CPACR REG(0xE000ED88u)

static uint32_t semihost(uint32_t op, uint32_t arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register uint32_t r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mg_test_puts(const char *s)
{
    (void)semihost(0x04u, (uint32_t)s);      /* SYS_WRITE0 */
}

void mg_test_exit(int code)
{
    /* SYS_EXIT: ADP_Stopped_ApplicationExit -> status 0, anything else -> status 1 */
    (void)semihost(0x18u, code == 0 ? 0x20026u : 0x20024u);
    for (;;) {
    }
}

void mg_test_platform_init(void)
{
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x5u;                          /* enable, processor clock, no interrupt */
}

uint32_t mg_test_ticks(void)
{
    return SYST_CVR;
}

uint32_t mg_test_ticks_since(uint32_t start)
{
    return (start - SYST_CVR) & 0x00FFFFFFu;  /* 24-bit down counter */
}

uint32_t mg_test_calibrate(uint32_t *instructions)
{
    const uint32_t n = 1000000u;
    uint32_t t0, r = n;
    t0 = mg_test_ticks();
#if __ARM_ARCH_ISA_THUMB == 1      /* Armv6-M: GCC passes Thumb-1 inline asm in divided syntax */
    __asm__ volatile("1: sub %0, #1\n\tbne 1b" : "+r"(r) : : "cc");
#else
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(r) : : "cc");
#endif
    *instructions = 2u * n;
    return mg_test_ticks_since(t0);
}

/* Stack high-water mark: the stack region below the initial stack pointer is painted at
 * reset; the deepest word no longer holding the pattern gives the bytes ever used. */
#define STACK_PAINT 0xC5C5C5C5u

static void stack_paint(void)
{
    uint32_t *p = &_sstack;
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
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

void Reset_Handler(void);
void Default_Handler(void);

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
#if defined(__ARM_FP)
    CPACR |= 0xFu << 20;                      /* CP10/CP11 full access (FPU, MVE), first: the */
    __asm__ volatile("dsb\n\tisb");           /* loops below may be vectorized (M55 -O3) */
#endif
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0u;
    }
    stack_paint();
    mg_test_exit(main());
}

void Default_Handler(void)
{
    mg_test_puts("MGCHECK fault\n");
    mg_test_exit(2);
}

__attribute__((section(".vectors"), used))
static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler,
    Default_Handler, 0, Default_Handler, Default_Handler,
};
