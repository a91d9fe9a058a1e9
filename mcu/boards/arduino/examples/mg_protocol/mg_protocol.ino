/* mg_protocol - the mgrade-edge serial protocol (docs/protocol.md) over Serial at 115200 baud:
 * the host streams test sequences and compares every step's logits with its own reference,
 *
 *     mgrade-stream-eval --port /dev/ttyACM0 --model RUN/int8
 *
 * (from the mgrade-edge repository; RUN/int8 is the converted model this library was written
 * from). The app never blocks on delay(): it polls Serial in loop(). On AVR it takes Timer1
 * over for its step timing (see mg_board_arduino.cpp). */
#include <MGRADE_LIBRARY_HEADER>

void setup()
{
    board_init();     /* Serial.begin(115200), tick counter */
    mg_app_init();    /* reset the model, send the BOOT event */
}

void loop()
{
    mg_app_poll();    /* every received byte; replies go out on Serial */
}
