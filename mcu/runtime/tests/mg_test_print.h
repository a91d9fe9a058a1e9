/* mg_test_print.h - "key=value " output for the on-target test harnesses (model_check.c,
 * fast_check.c), without printf. Include it after mg_test_puts is declared. */
#ifndef MG_TEST_PRINT_H
#define MG_TEST_PRINT_H

#include <stdint.h>

/* Prints "key=<v in decimal> " through mg_test_puts; keys longer than 32 chars are cut. */
static void mg_test_put_u32(const char *key, uint32_t v)
{
    char buf[16];
    char out[48];
    int n = 0, k = 0;
    do {
        buf[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v && n < 15);
    while (*key && k < 32) {
        out[k++] = *key++;
    }
    out[k++] = '=';
    while (n) {
        out[k++] = buf[--n];
    }
    out[k++] = ' ';
    out[k] = '\0';
    mg_test_puts(out);
}

#endif /* MG_TEST_PRINT_H */
