/* Entry for the QEMU xtensa "sim" machine (lx106 core, call0 ABI). The CPU starts at the
 * reset vector 0x50000000 (link.ld puts this section there); QEMU's ELF loader has placed
 * .data and zeroed .bss, so set the stack pointer and call the C start. */
    .section .text.entry, "ax"
    .global _start
    .align 4
_start:
    j       .Lmain
    .align 4
    .literal_position
    .literal .Lstack, _stack_top
    .literal .Lstart, mg_xt_start
    .align 4
.Lmain:
    l32r    a1, .Lstack
    l32r    a0, .Lstart
    callx0  a0
1:  j       1b
