/* startup_arm.c - reset and exception vectors of the QEMU Cortex-M boards (M0 to M55).
 * Reset: copy .data, clear .bss, enable the FPU (CP10/CP11) where the core has one, call
 * main. Faults report through ARM semihosting and exit QEMU with a failure status. The
 * Armv8-M boards (cm33, cm55) run in the secure state, where QEMU starts them. */
#include <stdint.h>

#include "mg_stack.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);

#define CPACR (*(volatile uint32_t *)0xE000ED88u)

static uint32_t semihost(uint32_t op, uint32_t arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register uint32_t r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void qemu_semihost_exit(int code)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (status 0) or ADP_Stopped_RunTimeErrorUnknown */
    (void)semihost(0x18u, code == 0 ? 0x20026u : 0x20024u);
    for (;;) {
    }
}

void Fault_Handler(void)
{
    (void)semihost(0x04u, (uint32_t)"mgrade firmware: fault exception, exiting\n");  /* SYS_WRITE0 */
    qemu_semihost_exit(1);
}

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
#if defined(__ARM_FP)
    /* first: the compiler may vectorize the loops below (Helium/MVE on the M55 at -O3) */
    CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    mg_stack_paint();
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0u;
    }
    (void)main();
    qemu_semihost_exit(0);
}

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used))
static const vector_t vectors[16] = {
    (vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    Fault_Handler,   /* NMI */
    Fault_Handler,   /* HardFault */
    Fault_Handler,   /* MemManage */
    Fault_Handler,   /* BusFault */
    Fault_Handler,   /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler,   /* SVCall */
    Fault_Handler,   /* DebugMon */
    0,
    Fault_Handler,   /* PendSV */
    SysTick_Handler,
};
