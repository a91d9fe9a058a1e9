/* Bare-metal test platform for the harness on QEMU virt (RV32IMC, -bios none -semihosting):
 * the qemu-rv32 board's entry and semihosting call (mcu/boards/qemu-rv32/startup.S) and its
 * sections (link.ld + memory.ld); here reset (stack paint, then the shared start-up: .data
 * copy, .bss clear), output and exit through semihosting (../mg_test_baremetal.c), and
 * instret as the tick counter (1 instruction per tick under -icount). Only for
 * mcu/runtime/tests/model_check.c. */
#include <stdint.h>

#include "../mg_test_platform.h"

void mg_rv_reset(void);
void mg_rv_fault(void);
uint32_t mg_rv_semihost(uint32_t op, uintptr_t arg);

static uint32_t semihost(uint32_t op, uintptr_t arg)
{
    return mg_rv_semihost(op, arg);
}

uint32_t mg_test_ticks(void)
{
    uint32_t v;
    __asm__ volatile(".insn i SYSTEM, 2, %0, x0, -1022" : "=r"(v));   /* csrr %0, instret */
    return v;
}

#define MG_TEST_UP_TICKS
#define MG_TEST_SEMIHOST
#include "../mg_test_baremetal.c"

void mg_rv_fault(void)
{
    mg_test_fault();
}

void mg_rv_reset(void)
{
    uint32_t *sp;
    __asm__ volatile("mv %0, sp" : "=r"(sp));
    mg_test_stack_paint(sp);
    mg_test_start();
}
