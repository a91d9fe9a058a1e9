/* board.c - qemu-rv32 board port (QEMU virt): NS16550A UART0 at 0x10000000, the instret
 * counter as the tick counter. Under `-icount shift=0` instret counts retired instructions
 * exactly, so one tick = 1 instruction. */
#include <stdint.h>

#include "mg_app.h"
#include "mg_board.h"

#define UART0_BASE 0x10000000u
#define UART_REG(off) (*(volatile uint8_t *)(UART0_BASE + (off)))
#define UART_RBR UART_REG(0u)   /* receive buffer (read) / transmit holding (write) */
#define UART_THR UART_REG(0u)
#define UART_IER UART_REG(1u)
#define UART_FCR UART_REG(2u)
#define UART_LCR UART_REG(3u)
#define UART_LSR UART_REG(5u)   /* bit0 data ready, bit5 THR empty, bit6 transmitter empty */
#define UART_DLL UART_REG(0u)   /* with LCR.DLAB */
#define UART_DLM UART_REG(1u)

#define UART_CLK_HZ 3686400u    /* virt's 16550 input clock */
#define BAUD 115200u

const mg_tick_unit_t board_tick_unit = {MG_TICK_INSTRUCTIONS, 1u};

void board_init(void)
{
    const uint32_t div = UART_CLK_HZ / (16u * BAUD);
    UART_IER = 0u;
    UART_LCR = 0x80u;                   /* DLAB: divisor latch */
    UART_DLL = (uint8_t)(div & 0xFFu);
    UART_DLM = (uint8_t)(div >> 8);
    UART_LCR = 0x03u;                   /* 8N1 */
    UART_FCR = 0x07u;                   /* FIFOs on and cleared */
}

int board_uart_getc_nonblocking(void)
{
    if (UART_LSR & 0x01u) {
        return (int)UART_RBR;
    }
    return -1;
}

void board_uart_putc(uint8_t c)
{
    while (!(UART_LSR & 0x20u)) {
    }
    UART_THR = c;
}

void board_uart_flush(void)
{
    while (!(UART_LSR & 0x40u)) {
    }
}

uint32_t board_ticks(void)
{
    uint32_t v;
    __asm__ volatile(".insn i SYSTEM, 2, %0, x0, -1022" : "=r"(v));   /* csrr %0, instret (0xC02) */
    return v;
}

void board_idle(void)
{
}

const char *board_name(void)
{
    return "qemu-rv32 (virt, RV32IMC)";
}

int main(void)
{
    mg_app_main();
    return 0;
}
