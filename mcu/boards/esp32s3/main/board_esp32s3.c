/* board_esp32s3.c - ESP32-S3 board port (ESP-IDF): UART0 (the USB-UART bridge on DevKitC
 * boards) at 115200 8N1 through driver/uart.h, CPU cycle counter (CCOUNT) for the ticks.
 * Logging is silenced so that only protocol frames go out on UART0; the ROM bootloader's
 * boot messages still appear once after reset, and the host resynchronises on them. */
#include <stdint.h>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"

#include "mg_app.h"
#include "mg_board.h"

#define MG_UART UART_NUM_0
#define MG_BAUD 115200
#define MG_RX_RING 1024
#define MG_TX_RING 1024

const mg_tick_unit_t board_tick_unit = {MG_TICK_CYCLES, 1u};

static QueueHandle_t uart_events;
static uint8_t tx_buf[256];
static size_t tx_n;

void board_init(void)
{
    const uart_config_t cfg = {
        .baud_rate = MG_BAUD,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT,
    };
    esp_log_level_set("*", ESP_LOG_NONE);
    ESP_ERROR_CHECK(uart_driver_install(MG_UART, MG_RX_RING, MG_TX_RING, 16, &uart_events, 0));
    ESP_ERROR_CHECK(uart_param_config(MG_UART, &cfg));
    /* UART0 keeps its default pins (U0TXD/U0RXD) */
}

int board_uart_getc_nonblocking(void)
{
    uint8_t c;
    return uart_read_bytes(MG_UART, &c, 1, 0) == 1 ? (int)c : -1;
}

void board_uart_flush(void)
{
    if (tx_n > 0u) {
        uart_write_bytes(MG_UART, (const char *)tx_buf, tx_n);   /* copies into the TX ring */
        tx_n = 0u;
    }
}

void board_uart_putc(uint8_t c)
{
    if (tx_n == sizeof tx_buf) {
        board_uart_flush();
    }
    tx_buf[tx_n++] = c;
}

uint32_t board_ticks(void)
{
    return (uint32_t)esp_cpu_get_cycle_count();
}

void board_idle(void)
{
    /* block until the UART driver reports an event (data, overflow, ...) or 10 ms pass;
     * this also lets the idle task run, so the task watchdog stays quiet */
    uart_event_t ev;
    if (xQueueReceive(uart_events, &ev, pdMS_TO_TICKS(10)) == pdTRUE) {
        if (ev.type == UART_FIFO_OVF || ev.type == UART_BUFFER_FULL) {
            uart_flush_input(MG_UART);      /* lost bytes: drop them, the host retransmits */
            xQueueReset(uart_events);
        }
    }
}

const char *board_name(void)
{
    return "esp32s3";
}

void app_main(void)
{
    mg_app_main();     /* never returns */
}
