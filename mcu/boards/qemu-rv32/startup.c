/* startup.c - qemu-rv32 reset (paint the stack, copy .data, clear .bss, main) and fault
 * report, both ending QEMU through semihosting (SYS_EXIT: status 0 or 1). */
#include <stdint.h>

#include "mg_stack.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);
void mg_rv_reset(void);
void mg_rv_fault(void);
uint32_t mg_rv_semihost(uint32_t op, uintptr_t arg);

static void qemu_semihost_exit(int code)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (status 0) or ADP_Stopped_RunTimeErrorUnknown */
    (void)mg_rv_semihost(0x18u, code == 0 ? 0x20026u : 0x20024u);
    for (;;) {
    }
}

void mg_rv_fault(void)
{
    (void)mg_rv_semihost(0x04u, (uintptr_t)"mgrade firmware: trap, exiting\n");  /* SYS_WRITE0 */
    qemu_semihost_exit(1);
}

void mg_rv_reset(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
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
