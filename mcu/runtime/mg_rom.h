/* mg_rom.h - where the model's constants live: MG_ROM qualifies every constant the generated
 * package holds (weights, biases, requantization parameters, operator parameter structs, the
 * runtime's tables) and every runtime pointer that reads them.
 *
 * On AVR (8-bit, Harvard: flash and RAM are separate address spaces) `const` data is copied
 * to RAM at start-up (an ATmega2560 has 8 KB of RAM, an ATmega328P 2 KB); MG_ROM is avr-gcc's
 * `__flash` named address space there: the data stays in flash and every read through an
 * MG_ROM pointer is an LPM load. `__flash` pointers are 16 bits: the constants must sit in
 * the first 64 KB of flash, where avr-gcc's linker scripts put them (.progmem at the start of
 * .text); the Arduino build checks it (convert/arduino.py). Named address spaces are GNU C
 * (avr-gcc -std=gnu99/gnu11, what the Arduino IDE uses), not C++ nor strict ISO C: there
 * (-std=c99, or C++ including a package header) MG_ROM is empty and the constants are plain
 * `const` data. Everywhere else MG_ROM is empty: the same code and arithmetic, bit for bit. */
#ifndef MG_ROM_H
#define MG_ROM_H

#if defined(__AVR__) && !defined(__cplusplus) && !defined(__STRICT_ANSI__)
#define MG_ROM __flash
#define MG_ROM_IN_FLASH 1
#else
#define MG_ROM
#define MG_ROM_IN_FLASH 0
#endif

/* 1 if a pointer read from an MG_ROM struct is not NULL. avr-gcc 5.4 (Debian's) crashes
 * ("unrecognizable insn") on `s->ptr != NULL` when s points into __flash and only the
 * comparison uses the value; reading the pointer through a volatile local avoids it. */
#if MG_ROM_IN_FLASH
#define mg_rom_nonnull(ptr) mg_rom_nonnull_(ptr)
static inline int mg_rom_nonnull_(const MG_ROM void *ptr)
{
    const MG_ROM void *volatile v = ptr;
    return v != 0;
}
#else
#define mg_rom_nonnull(ptr) ((ptr) != 0)
#endif

#endif /* MG_ROM_H */
