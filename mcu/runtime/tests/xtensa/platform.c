/* Bare-metal test platform for qemu-system-xtensa -M sim -cpu lx106 -semihosting:
 * output and exit through the simulator's SIMCALL semihosting interface (a2 = call
 * number: 1 exit, 4 write; arguments in a3..a5), CCOUNT as the tick counter (the
 * calibration loop: ../mg_test_baremetal.c). */
#include <stdint.h>

#include "../mg_test_platform.h"

int main(void);
void mg_xt_start(void);

static int32_t simcall(int32_t nr, int32_t a, int32_t b, int32_t c)
{
    register int32_t a2 __asm__("a2") = nr;
    register int32_t a3 __asm__("a3") = a;
    register int32_t a4 __asm__("a4") = b;
    register int32_t a5 __asm__("a5") = c;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    return a2;
}

void mg_test_puts(const char *s)
{
    int32_t n = 0;
    while (s[n]) {
        ++n;
    }
    (void)simcall(4, 1, (int32_t)(uintptr_t)s, n);
}

void mg_test_exit(int code)
{
    (void)simcall(1, code, 0, 0);
    for (;;) {
    }
}

uint32_t mg_test_ticks(void)
{
    uint32_t v;
    __asm__ volatile("rsr %0, ccount" : "=r"(v));
    return v;
}

#define MG_TEST_UP_TICKS
#include "../mg_test_baremetal.c"

void mg_xt_start(void)
{
    mg_test_exit(main());
}

uint32_t mg_test_stack_used(void)
{
    return 0u;    /* not measured on the lx106 sim */
}
