/* board.c - QEMU mps2-an386 board port: CMSDK APB UART0, SysTick tick counter.
 * Under `-icount shift=0` the virtual CPU runs at 1 instruction per ns and SysTick counts
 * the 25 MHz system clock, so one tick = 40 instructions, deterministically. */
#include <stdint.h>

#include "mg_app.h"
#include "mg_board.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define UART0_BASE 0x40004000u
#define UART_DATA REG(UART0_BASE + 0x00u)
#define UART_STATE REG(UART0_BASE + 0x04u)   /* bit0 TX full, bit1 RX full, bit3 RX overrun */
#define UART_CTRL REG(UART0_BASE + 0x08u)    /* bit0 TX enable, bit1 RX enable */
#define UART_BAUDDIV REG(UART0_BASE + 0x10u)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)

#define SYSCLK_HZ 25000000u
#define BAUD 115200u

const mg_tick_unit_t board_tick_unit = {MG_TICK_INSTRUCTIONS, 40u};

static volatile uint32_t systick_wraps;

void SysTick_Handler(void);   /* vector in startup.c */

void SysTick_Handler(void)
{
    systick_wraps++;
}

void board_init(void)
{
    UART_BAUDDIV = SYSCLK_HZ / BAUD;
    UART_CTRL = 0x3u;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u;    /* enable, interrupt on wrap, processor clock */
}

int board_uart_getc_nonblocking(void)
{
    uint32_t st = UART_STATE;
    if (st & 0x8u) {
        UART_STATE = 0x8u;      /* clear RX overrun (write one to clear) */
    }
    if (st & 0x2u) {
        return (int)(UART_DATA & 0xFFu);
    }
    return -1;
}

void board_uart_putc(uint8_t c)
{
    while (UART_STATE & 0x1u) {
    }
    UART_DATA = c;
}

void board_uart_flush(void)
{
    while (UART_STATE & 0x1u) {
    }
}

uint32_t board_ticks(void)
{
    uint32_t hi, lo;
    do {
        hi = systick_wraps;
        lo = SYST_CVR;
    } while (hi != systick_wraps);
    return (hi << 24) + (0x00FFFFFFu - lo);
}

void board_idle(void)
{
}

const char *board_name(void)
{
    return "qemu-cm4 (mps2-an386, Cortex-M4F)";
}

int main(void)
{
    mg_app_main();
    return 0;
}
