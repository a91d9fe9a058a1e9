/* mg_stack.h - stack high-water mark for the Cortex-M and RISC-V board ports.
 *
 * Reset_Handler calls mg_stack_paint() first: every word of the board's stack region
 * [_sstack, _estack) below the current stack pointer (less a 64-byte guard) is set to
 * MG_STACK_PAINT. The deepest word that no longer holds the pattern tells how many bytes of
 * stack were ever used; a host reads the region back (benchmarks/firmware_cost.py reads it
 * through the QEMU monitor) or a board calls mg_stack_used(). The link scripts define
 * _sstack and _estack and size the region (see STACK_SIZE there for the measured figure).
 */
#ifndef MG_STACK_H
#define MG_STACK_H

#include <stdint.h>

#define MG_STACK_PAINT 0xC5C5C5C5u

extern uint32_t _sstack, _estack;

static inline __attribute__((always_inline)) void mg_stack_paint(void)
{
    uint32_t *p = &_sstack;
    uint32_t *sp;
#if defined(__riscv)
    __asm__ volatile("mv %0, sp" : "=r"(sp));
#else
    __asm__ volatile("mov %0, sp" : "=r"(sp));
#endif
    while (p < sp - 16) {
        *p++ = MG_STACK_PAINT;
    }
}

/* Bytes of the stack region used since reset (0 if the region was never painted). */
static inline uint32_t mg_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == MG_STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

#endif /* MG_STACK_H */
