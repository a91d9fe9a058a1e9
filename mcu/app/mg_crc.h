/* mg_crc.h - CRC-16/CCITT-FALSE for the serial protocol.
 *
 * Parameters: width 16, poly 0x1021, init 0xFFFF, no input/output reflection, xorout 0x0000.
 * Check value: CRC of the ASCII bytes "123456789" is 0x29B1. Portable C99, no tables, no state.
 */
#ifndef MG_CRC_H
#define MG_CRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_CRC16_INIT 0xFFFFu

/* Continue a CRC over n more bytes; start with crc = MG_CRC16_INIT. data may be NULL if n == 0. */
uint16_t mg_crc16_update(uint16_t crc, const uint8_t *data, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* MG_CRC_H */
