/* Minimal bare-metal test platform for the harness on the QEMU Cortex-M boards (M0 to M55):
 * vector table, reset handler (FPU enable where the core has one, stack paint, then the shared
 * start-up: .data copy, .bss clear), SysTick as a tick counter, ARM semihosting for output and
 * exit (../mg_test_baremetal.c). Only for mcu/runtime/tests/model_check.c; the firmware uses
 * the board port under mcu/boards/. It links with the boards' sections
 * (mcu/boards/qemu-shared/sections.ld + the board's memory.ld), which define the stack region
 * [_sstack, _estack). */
#include <stdint.h>

#include "../mg_test_platform.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define CPACR REG(0xE000ED88u)

static uint32_t semihost(uint32_t op, uintptr_t arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register uint32_t r1 __asm__("r1") = (uint32_t)arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
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

#define MG_TEST_SEMIHOST
#include "../mg_test_baremetal.c"

void Reset_Handler(void);
void Default_Handler(void);

void Reset_Handler(void)
{
    uint32_t *sp;
#if defined(__ARM_FP)
    CPACR |= 0xFu << 20;                      /* CP10/CP11 full access (FPU, MVE), first: the */
    __asm__ volatile("dsb\n\tisb");           /* loops below may be vectorized (M55 -O3) */
#endif
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    mg_test_stack_paint(sp);
    mg_test_start();
}

void Default_Handler(void)
{
    mg_test_fault();
}

__attribute__((section(".vectors"), used))
static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler,
    Default_Handler, 0, Default_Handler, Default_Handler,
};
