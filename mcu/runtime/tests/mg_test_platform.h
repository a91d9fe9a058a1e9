/* mg_test_platform.h - what model_check.c needs from a bare-metal test platform
 * (implemented in tests/qemu/ for the QEMU Cortex-M boards, tests/rv32/ for qemu-rv32,
 * tests/xtensa/ for the lx106 sim, with the parts they share in mg_test_baremetal.c). */
#ifndef MG_TEST_PLATFORM_H
#define MG_TEST_PLATFORM_H

#include <stdint.h>

void mg_test_platform_init(void);
void mg_test_puts(const char *s);                 /* to the host console (semihosting) */
uint32_t mg_test_ticks(void);                     /* a free-running tick counter */
uint32_t mg_test_ticks_since(uint32_t start);     /* ticks elapsed since `start` */
/* Runs a loop of a known instruction count; returns its ticks and stores the count. */
uint32_t mg_test_calibrate(uint32_t *instructions);
/* Bytes of stack used so far (painted at reset), or 0 where the platform does not measure. */
uint32_t mg_test_stack_used(void);
void mg_test_exit(int code);                      /* ends the emulation: 0 pass, else fail */

#endif /* MG_TEST_PLATFORM_H */
