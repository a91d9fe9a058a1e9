/* board.c - host (POSIX) board: the protocol application over stdin/stdout, for tests and
 * debugging without an emulator (`build/host/mg_host_device`, e.g. behind a pty or pipe).
 * Ticks are microseconds of CLOCK_MONOTONIC. Exits when stdin closes. */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "mg_app.h"
#include "mg_board.h"

const mg_tick_unit_t board_tick_unit = {MG_TICK_MICROSECONDS, 1u};

static uint8_t out_buf[512];
static size_t out_n;

void board_init(void)
{
}

int board_uart_getc_nonblocking(void)
{
    struct pollfd p;
    uint8_t c;
    ssize_t r;
    p.fd = 0;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP))) {
        return -1;
    }
    r = read(0, &c, 1);
    if (r == 0) {
        board_uart_flush();
        exit(0);          /* stdin closed */
    }
    return r == 1 ? (int)c : -1;
}

void board_uart_putc(uint8_t c)
{
    if (out_n == sizeof out_buf) {
        board_uart_flush();
    }
    out_buf[out_n++] = c;
}

void board_uart_flush(void)
{
    size_t off = 0;
    while (off < out_n) {
        ssize_t w = write(1, out_buf + off, out_n - off);
        if (w <= 0) {
            exit(0);      /* the reader went away */
        }
        off += (size_t)w;
    }
    out_n = 0;
}

uint32_t board_ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
}

void board_idle(void)
{
    struct pollfd p;
    p.fd = 0;
    p.events = POLLIN;
    (void)poll(&p, 1, 100);
}

const char *board_name(void)
{
    return "host (stdio)";
}

int main(void)
{
    mg_app_main();
    return 0;
}
