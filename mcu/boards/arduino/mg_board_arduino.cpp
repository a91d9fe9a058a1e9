/* mg_board_arduino.cpp - the board port (mg_board.h) for any Arduino core: the protocol app's
 * UART is `Serial` (115200 8N1), its tick counter Timer1 on AVR and micros() elsewhere.
 *
 * AVR (Uno, Mega 2560, ...): Timer1 runs free at F_CPU / 8 with an overflow interrupt that
 * extends it to 32 bits, so one tick is 8 CPU cycles (0.5 us at 16 MHz). board_init() takes
 * Timer1 over from the core (analogWrite() on its PWM pins - Mega 11/12, Uno 9/10 - and the
 * Servo library stop working while the protocol app runs). Under qemu-system-avr (which has
 * no -icount for AVR: "Bad icount read") the timer follows the host's clock, so the ticks it
 * reports there are no measure of cost (benchmarks/avr_cost.py counts cycles in simavr).
 * Other cores (ESP32, Arm): micros(), one tick per microsecond. */
#include <Arduino.h>

#include "mg_board.h"

#ifndef MG_ARDUINO_BAUD
#define MG_ARDUINO_BAUD 115200
#endif

#if defined(__AVR__)
#include <avr/interrupt.h>
#include <avr/io.h>

#define MG_T1_PRESCALER 8UL
const mg_tick_unit_t board_tick_unit = {MG_TICK_CYCLES, MG_T1_PRESCALER};

static volatile uint16_t t1_wraps;

ISR(TIMER1_OVF_vect)
{
    t1_wraps++;
}

static void ticks_begin(void)
{
    uint8_t sreg = SREG;
    cli();
    TCCR1A = 0;                  /* normal mode: count 0..0xFFFF and wrap */
    TCCR1B = _BV(CS11);          /* clk / 8 */
    TCNT1 = 0;
    TIFR1 = _BV(TOV1);           /* clear a pending overflow */
    TIMSK1 = _BV(TOIE1);
    t1_wraps = 0;
    SREG = sreg;
}

uint32_t board_ticks(void)
{
    uint8_t sreg = SREG;
    uint16_t hi, lo;
    cli();
    hi = t1_wraps;
    lo = TCNT1;
    if ((TIFR1 & _BV(TOV1)) && lo < 0x8000u) {
        hi++;                    /* wrapped after cli(), its interrupt still pending */
    }
    SREG = sreg;
    return ((uint32_t)hi << 16) | lo;
}
#else
const mg_tick_unit_t board_tick_unit = {MG_TICK_MICROSECONDS, 1u};

static void ticks_begin(void)
{
}

uint32_t board_ticks(void)
{
    return (uint32_t)micros();
}
#endif

void board_init(void)
{
    Serial.begin(MG_ARDUINO_BAUD);
    ticks_begin();
}

int board_uart_getc_nonblocking(void)
{
    return Serial.available() > 0 ? Serial.read() : -1;
}

void board_uart_putc(uint8_t c)
{
    Serial.write(c);
}

void board_uart_flush(void)
{
#if defined(__AVR__) && defined(SERIAL_TX_BUFFER_SIZE)
    /* until the core's TX buffer has drained into the UART (Serial.flush() also waits for the
     * TXC flag, which qemu-system-avr's USART never sets) */
    while (Serial.availableForWrite() < SERIAL_TX_BUFFER_SIZE - 1) {
    }
#else
    Serial.flush();
#endif
}

void board_idle(void)
{
}

const char *board_name(void)
{
#if defined(ARDUINO_AVR_MEGA2560)
    return "arduino-mega2560";
#elif defined(ARDUINO_AVR_UNO)
    return "arduino-uno";
#elif defined(ARDUINO_BOARD)
    return "arduino " ARDUINO_BOARD;
#else
    return "arduino";
#endif
}
