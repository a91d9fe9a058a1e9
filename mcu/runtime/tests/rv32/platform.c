/* Bare-metal test platform for the harness on QEMU virt (RV32IMC, -bios none -semihosting):
 * the qemu-rv32 board's entry and semihosting call (mcu/boards/qemu-rv32/startup.S) and its
 * sections (link.ld + memory.ld); here reset (.data copy, .bss clear, stack paint), output
 * and exit through semihosting, and instret as the tick counter (1 instruction per tick
 * under -icount). Only for mcu/runtime/tests/model_check.c. */
#include <stdint.h>

#include "../mg_test_platform.h"

int main(void);
void mg_rv_reset(void);
void mg_rv_fault(void);
uint32_t mg_rv_semihost(uint32_t op, uintptr_t arg);

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;

#define STACK_PAINT 0xC5C5C5C5u

void mg_test_puts(const char *s)
{
    (void)mg_rv_semihost(0x04u, (uintptr_t)s);      /* SYS_WRITE0 */
}

void mg_test_exit(int code)
{
    /* SYS_EXIT: ADP_Stopped_ApplicationExit -> status 0, anything else -> status 1 */
    (void)mg_rv_semihost(0x18u, code == 0 ? 0x20026u : 0x20024u);
    for (;;) {
    }
}

void mg_test_platform_init(void)
{
}

uint32_t mg_test_ticks(void)
{
    uint32_t v;
    __asm__ volatile(".insn i SYSTEM, 2, %0, x0, -1022" : "=r"(v));   /* csrr %0, instret */
    return v;
}

uint32_t mg_test_ticks_since(uint32_t start)
{
    return mg_test_ticks() - start;
}

uint32_t mg_test_calibrate(uint32_t *instructions)
{
    const uint32_t n = 1000000u;
    uint32_t t0, r = n;
    t0 = mg_test_ticks();
    __asm__ volatile("1: addi %0, %0, -1\n\tbnez %0, 1b" : "+r"(r));
    *instructions = 2u * n;
    return mg_test_ticks_since(t0);
}

uint32_t mg_test_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

void mg_rv_fault(void)
{
    mg_test_puts("MGCHECK fault\n");
    mg_test_exit(2);
}

void mg_rv_reset(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    uint32_t *p = &_sstack, *sp;
    __asm__ volatile("mv %0, sp" : "=r"(sp));
    while (p < sp - 16) {
        *p++ = STACK_PAINT;
    }
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0u;
    }
    mg_test_exit(main());
}
