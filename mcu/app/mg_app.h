/* mg_app.h - the serial protocol application shared by every board.
 *
 * Runs the model behind mg_model.h on frames received over the board UART and answers the
 * requests of docs/protocol.md. Static buffers only; no heap.
 */
#ifndef MG_APP_H
#define MG_APP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_APP_MAX_OUT 256u   /* largest n_out the application buffers (int32 sums) */

void mg_app_init(void);          /* reset the model and the receiver; send the BOOT event */
void mg_app_feed(uint8_t byte);  /* process one received byte; replies go to board_uart_putc */
int mg_app_poll(void);           /* feed every pending UART byte; returns how many */
void mg_app_main(void);          /* board_init(), mg_app_init(), then poll forever */

#ifdef __cplusplus
}
#endif

#endif /* MG_APP_H */
