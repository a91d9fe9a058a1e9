/* board_arm.c - the QEMU Cortex-M board ports (qemu-cm0/cm3/cm4/cm7/cm33/cm55): a UART, SysTick
 * as the tick counter. Each board's board.mk (through qemu-shared/arm.mk) defines:
 *   MG_QEMU_UART_CMSDK or MG_QEMU_UART_NRF51   the UART model (MPS2/MPS3: CMSDK APB UART;
 *                                              micro:bit: the nRF51 UART)
 *   MG_QEMU_UART_BASE                          its base address (the secure alias on Armv8-M)
 *   MG_QEMU_SYSCLK_HZ                          the clock SysTick counts (the machine's sysclk)
 *   MG_QEMU_BOARD_NAME                         what board_name() returns
 * Under `-icount shift=0` the virtual CPU runs 1 instruction per ns, so one SysTick tick is
 * 10^9 / MG_QEMU_SYSCLK_HZ instructions, deterministically: 40 at 25 MHz (the tick unit, raw
 * ticks), 50 at 20 MHz; at 16 and 32 MHz (62.5, 31.25) board_ticks() returns instructions. */
#include <stdint.h>

#include "mg_app.h"
#include "mg_board.h"

#if !defined(MG_QEMU_UART_BASE) || !defined(MG_QEMU_SYSCLK_HZ) || !defined(MG_QEMU_BOARD_NAME)
#error "define MG_QEMU_UART_BASE, MG_QEMU_SYSCLK_HZ and MG_QEMU_BOARD_NAME (qemu-shared/arm.mk)"
#endif

#define REG(a) (*(volatile uint32_t *)(a))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define BAUD 115200u

/* instructions per SysTick tick, times 4 (exact for 16, 20, 25, 32 MHz) */
#define NS_PER_TICK_X4 (4000000000u / (MG_QEMU_SYSCLK_HZ))
typedef char mg_sysclk_divides_4e9[(4000000000u % (MG_QEMU_SYSCLK_HZ)) == 0u ? 1 : -1];
#define TICKS_ARE_INSTRUCTIONS (NS_PER_TICK_X4 % 4u != 0u)

const mg_tick_unit_t board_tick_unit = {
    MG_TICK_INSTRUCTIONS, TICKS_ARE_INSTRUCTIONS ? 1u : NS_PER_TICK_X4 / 4u};

static volatile uint32_t systick_wraps;

void SysTick_Handler(void);   /* vector in startup_arm.c */

void SysTick_Handler(void)
{
    systick_wraps++;
}

#if defined(MG_QEMU_UART_CMSDK)
/* CMSDK APB UART: DATA, STATE (bit0 TX full, bit1 RX full, bit3 RX overrun), CTRL (bit0 TX
 * enable, bit1 RX enable), BAUDDIV */
#define UART_DATA REG(MG_QEMU_UART_BASE + 0x00u)
#define UART_STATE REG(MG_QEMU_UART_BASE + 0x04u)
#define UART_CTRL REG(MG_QEMU_UART_BASE + 0x08u)
#define UART_BAUDDIV REG(MG_QEMU_UART_BASE + 0x10u)

static void uart_init(void)
{
    UART_BAUDDIV = MG_QEMU_SYSCLK_HZ / BAUD;
    UART_CTRL = 0x3u;
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
#elif defined(MG_QEMU_UART_NRF51)
/* nRF51 UART: tasks, events (write 0 to clear), ENABLE = 4, RXD, TXD, BAUDRATE */
#define UART_STARTRX REG(MG_QEMU_UART_BASE + 0x000u)
#define UART_STARTTX REG(MG_QEMU_UART_BASE + 0x008u)
#define UART_RXDRDY REG(MG_QEMU_UART_BASE + 0x108u)
#define UART_TXDRDY REG(MG_QEMU_UART_BASE + 0x11Cu)
#define UART_ENABLE REG(MG_QEMU_UART_BASE + 0x500u)
#define UART_RXD REG(MG_QEMU_UART_BASE + 0x518u)
#define UART_TXD REG(MG_QEMU_UART_BASE + 0x51Cu)
#define UART_BAUDRATE REG(MG_QEMU_UART_BASE + 0x524u)

static void uart_init(void)
{
    UART_BAUDRATE = 0x01D7E000u;    /* 115200 */
    UART_ENABLE = 4u;
    UART_STARTRX = 1u;
    UART_STARTTX = 1u;
}

int board_uart_getc_nonblocking(void)
{
    if (UART_RXDRDY) {
        UART_RXDRDY = 0u;           /* cleared before the read: the next byte sets it again */
        return (int)(UART_RXD & 0xFFu);
    }
    return -1;
}

void board_uart_putc(uint8_t c)
{
    UART_TXDRDY = 0u;
    UART_TXD = c;
    while (!UART_TXDRDY) {          /* the byte has left once TXDRDY is set */
    }
}

void board_uart_flush(void)
{
}
#else
#error "define MG_QEMU_UART_CMSDK or MG_QEMU_UART_NRF51"
#endif

void board_init(void)
{
    uart_init();
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u;    /* enable, interrupt on wrap, processor clock */
}

uint32_t board_ticks(void)
{
    uint32_t hi, lo;
    do {
        hi = systick_wraps;
        lo = SYST_CVR;
    } while (hi != systick_wraps);
#if TICKS_ARE_INSTRUCTIONS
    /* ticks x ns/tick, modulo 2^32 (differences stay exact to one instruction) */
    return (uint32_t)(((((uint64_t)hi << 24) + (0x00FFFFFFu - lo)) * NS_PER_TICK_X4) >> 2);
#else
    return (hi << 24) + (0x00FFFFFFu - lo);
#endif
}

void board_idle(void)
{
}

const char *board_name(void)
{
    return MG_QEMU_BOARD_NAME;
}

int main(void)
{
    mg_app_main();
    return 0;
}
