/* mg_board.h - what a board port provides to the protocol application (mcu/app/).
 *
 * One implementation per directory under mcu/boards/<name>/. The application only calls
 * these functions; it never touches hardware itself.
 */
#ifndef MG_BOARD_H
#define MG_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What one unit of board_ticks() counts. */
typedef enum {
    MG_TICK_CYCLES = 0,        /* CPU clock cycles (DWT CYCCNT, CCOUNT, ...) */
    MG_TICK_INSTRUCTIONS = 1,  /* retired instructions (QEMU -icount) */
    MG_TICK_MICROSECONDS = 2
} mg_tick_kind_t;

typedef struct {
    mg_tick_kind_t kind;
    uint32_t units_per_tick;   /* e.g. 40 instructions per SysTick tick under QEMU icount */
} mg_tick_unit_t;

/* The board's tick unit constant (defined by the board port). */
extern const mg_tick_unit_t board_tick_unit;

void board_init(void);                       /* clocks, UART (115200 8N1 on real UARTs), tick counter */
int board_uart_getc_nonblocking(void);       /* next received byte 0..255, or -1 if none */
void board_uart_putc(uint8_t c);             /* blocking transmit of one byte */
void board_uart_flush(void);                 /* return once every byte put so far has left */
uint32_t board_ticks(void);                  /* free-running, wraps modulo 2^32 */
void board_idle(void);                       /* called when no byte is pending (may sleep/yield) */
const char *board_name(void);

#ifdef __cplusplus
}
#endif

#endif /* MG_BOARD_H */
