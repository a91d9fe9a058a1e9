/* startup.S - qemu-rv32 entry, trap vector and the RISC-V semihosting call. */
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, _estack
    la      t0, mg_rv_trap_entry
    .insn   i SYSTEM, 1, x0, t0, 0x305      /* csrw mtvec, t0 (Zicsr; the rv32im multilib has no _zicsr) */
    call    mg_rv_reset
1:  j       1b

    .text
    .balign 4
mg_rv_trap_entry:
    la      sp, _estack
    call    mg_rv_fault
2:  j       2b

/* uint32_t mg_rv_semihost(uint32_t op, uintptr_t arg): the semihosting sequence (uncompressed,
 * in one 16-byte block so it never crosses a page). */
    .globl  mg_rv_semihost
    .balign 16
mg_rv_semihost:
    .option push
    .option norvc
    slli    zero, zero, 0x1f
    ebreak
    srai    zero, zero, 7
    .option pop
    ret
