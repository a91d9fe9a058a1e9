/* model_cost.c - cycles per mg_model_step on an ATmega2560 (or any AVR with Timer1 and
 * USART0) under simavr, which counts cycles: Timer1 runs at the CPU clock (prescaler 1) and
 * its overflow interrupt extends it to 32 bits. The test frames and the host's per-step logits
 * are in flash (mg_avr_tv.c, written by benchmarks/avr_cost.py); every step's logits are
 * compared with the host's. Prints one line on USART0, then sleeps with interrupts off (simavr
 * exits there):
 *   MGAVR id=<model id> steps=N mismatched_bytes=M cycles_total=C cycles_min=A cycles_max=B overhead=O
 * cycles_* exclude the measurement's own overhead O (two reads of the counter). */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <stdint.h>
#include <stdlib.h>

#include "mg_model.h"
#include "mg_model_data.h"
#include "mg_avr_tv.h"

static volatile uint16_t wraps;

ISR(TIMER1_OVF_vect)
{
    wraps++;
}

static uint32_t cycles(void)
{
    uint8_t sreg = SREG;
    uint16_t hi, lo;
    cli();
    hi = wraps;
    lo = TCNT1;
    if ((TIFR1 & _BV(TOV1)) && lo < 0x8000u) {
        hi++;
    }
    SREG = sreg;
    return ((uint32_t)hi << 16) | lo;
}

static void put(char c)
{
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void puts_(const char *s)
{
    while (*s) {
        put(*s++);
    }
}

static void kv(const char *key, uint32_t v)
{
    char buf[12];
    put(' ');
    puts_(key);
    put('=');
    puts_(ultoa(v, buf, 10));
}

static mg_model_t model;

int main(void)
{
    int8_t x[MG_MODEL_N_IN];
    int8_t logits[MG_MODEL_N_OUT];
    uint32_t total = 0, lo = 0xFFFFFFFFu, hi = 0, bad = 0, steps = 0, overhead;
    uint16_t s, t, i;
    char hex[4];
    const mg_model_info_t *info = mg_model_info();

    UCSR0B = _BV(TXEN0);
    TCCR1A = 0;
    TCCR1B = _BV(CS10);                /* clk / 1: one count per cycle */
    TIMSK1 = _BV(TOIE1);
    sei();
    {
        uint32_t a = cycles();
        uint32_t b = cycles();
        overhead = b - a;
    }
    for (s = 0; s < MG_TV_SEQS; ++s) {
        mg_model_init(&model);
        for (t = 0; t < MG_TV_STEPS; ++t) {
            const uint32_t k = (uint32_t)s * MG_TV_STEPS + t;
            uint32_t c0, c1, dt;
            for (i = 0; i < MG_MODEL_N_IN; ++i) {
                x[i] = mg_tv_x[k * MG_MODEL_N_IN + i];
            }
            c0 = cycles();
            mg_model_step(&model, x, logits);
            c1 = cycles();
            dt = c1 - c0 - overhead;
            total += dt;
            lo = dt < lo ? dt : lo;
            hi = dt > hi ? dt : hi;
            for (i = 0; i < MG_MODEL_N_OUT; ++i) {
                bad += logits[i] != mg_tv_logits[k * MG_MODEL_N_OUT + i];
            }
            steps++;
        }
    }
    puts_("MGAVR id=");
    for (i = 0; i < 8; ++i) {
        utoa(info->id[i] | 0x100u, hex, 16);   /* "1xy": two hex digits after the 1 */
        put(hex[1]);
        put(hex[2]);
    }
    kv("steps", steps);
    kv("mismatched_bytes", bad);
    kv("cycles_total", total);
    kv("cycles_min", lo);
    kv("cycles_max", hi);
    kv("overhead", overhead);
    put('\n');
    cli();
    sleep_mode();
    return 0;
}
