/* board.c - generic Cortex-M port. Fill in the four user_* hooks for your part (clock and
 * pin setup, UART registers), e.g. in a separate file: the definitions here are weak.
 *
 * Ticks: the DWT cycle counter on ARMv7-M/ARMv8-M Mainline (Cortex-M3/M4/M7/M33), else
 * SysTick extended to 32 bits by its wrap interrupt (Cortex-M0/M0+/M23: CPU cycles too,
 * as long as SysTick runs from the processor clock). */
#include <stdint.h>

#include "mg_app.h"
#include "mg_board.h"

/* ---- user hooks: replace these (strong definitions elsewhere override them) ---- */
void user_board_init(void);
int user_uart_getc(void);
void user_uart_putc(uint8_t c);
void user_uart_flush(void);
__attribute__((weak)) void user_board_init(void) { /* clocks, pins, UART at 115200 8N1 */ }
__attribute__((weak)) int user_uart_getc(void) { return -1; }   /* received byte, or -1 */
__attribute__((weak)) void user_uart_putc(uint8_t c) { (void)c; }  /* blocking transmit */
__attribute__((weak)) void user_uart_flush(void) { }               /* wait for TX empty */
/* ------------------------------------------------------------------------------- */

#define REG(a) (*(volatile uint32_t *)(a))

const mg_tick_unit_t board_tick_unit = {MG_TICK_CYCLES, 1u};

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
#define HAVE_DWT 1
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#else
#define HAVE_DWT 0
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
static volatile uint32_t systick_wraps;
void SysTick_Handler(void);
void SysTick_Handler(void)
{
    systick_wraps++;
}
#endif

void board_init(void)
{
    user_board_init();
#if HAVE_DWT
    DEMCR |= 1u << 24;     /* TRCENA */
    DWT_CYCCNT = 0u;
    DWT_CTRL |= 1u;        /* CYCCNTENA */
#else
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u;
#endif
}

int board_uart_getc_nonblocking(void) { return user_uart_getc(); }
void board_uart_putc(uint8_t c) { user_uart_putc(c); }
void board_uart_flush(void) { user_uart_flush(); }
void board_idle(void) { }

uint32_t board_ticks(void)
{
#if HAVE_DWT
    return DWT_CYCCNT;
#else
    uint32_t hi, lo;
    do {
        hi = systick_wraps;
        lo = SYST_CVR;
    } while (hi != systick_wraps);
    return (hi << 24) + (0x00FFFFFFu - lo);
#endif
}

const char *board_name(void)
{
    return "generic-cm";
}

int main(void)
{
    mg_app_main();
    return 0;
}
