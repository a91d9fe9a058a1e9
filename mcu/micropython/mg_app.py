"""The serial protocol application in MicroPython (docs/protocol.md; C: mcu/app/mg_app.c).

    import mg_app; mg_app.main()          # over the USB REPL (sys.stdin/stdout.buffer)
    mg_app.main(mg_app.UartLink(machine.UART(1, 115200, tx=.., rx=..)))

Same messages and semantics as the C firmware: HELLO, RESET_STATE, STEP, RUN_BEGIN, RUN_CHUNK,
RUN_END, the BOOT event, the ERROR replies, idempotent stepping requests (one-entry reply
cache that answers only a true retransmission: the same type, seq and body bytes as the request
just executed) and the step/tick/sum bookkeeping. Ticks are time.ticks_us() (tick kind 2,
microseconds), taken around the model steps only. Ctrl-C is disabled while the app runs (a
binary frame may hold 0x03): reset the board to get the REPL back.
"""
import struct
import sys
import time

import mg_model
import mg_proto

T_HELLO = 0x01
T_RESET = 0x02
T_STEP = 0x03
T_RUN_BEGIN = 0x04
T_RUN_CHUNK = 0x05
T_RUN_END = 0x06
T_REPLY = 0x80
T_BOOT = 0xFE
T_ERROR = 0xFF
RUN_F_STEP_LOGITS = 0x01
E_VERSION = 5
E_UNKNOWN_TYPE = 6
E_BAD_LENGTH = 7
E_BAD_OFFSET = 8
E_TOO_LARGE = 9
MAX_OUT = 256
TICK_MICROSECONDS = 2


class StdioLink:
    """The REPL's stdin/stdout as a byte stream (USB CDC on boards, pipes on the unix port)."""

    def __init__(self):
        import select
        self.inp = getattr(sys.stdin, "buffer", sys.stdin)      # older ports: no .buffer
        self.out = getattr(sys.stdout, "buffer", sys.stdout)
        self.poller = select.poll()
        self.poller.register(sys.stdin, select.POLLIN)

    def read(self, timeout_ms):
        """One received byte as bytes, or b'' if none arrived in time; EOFError when closed."""
        if not self.poller.poll(timeout_ms):
            return b""
        b = self.inp.read(1)
        if not b:
            raise EOFError
        return b

    def write(self, data):
        self.out.write(data)
        if hasattr(self.out, "flush"):
            self.out.flush()


class UartLink:
    """A machine.UART as the byte stream."""

    def __init__(self, uart):
        self.uart = uart

    def read(self, timeout_ms):
        t0 = time.ticks_ms()
        while not self.uart.any():
            if time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
                return b""
            time.sleep_ms(1)
        return self.uart.read(self.uart.any()) or b""

    def write(self, data):
        self.uart.write(data)


def board_name():
    return ("micropython " + sys.platform)[:64]


class App:
    """The request dispatcher; send(wire_bytes) is the output."""

    def __init__(self, send, model=None):
        self.send = send
        self.model = model if model is not None else mg_model.Model()
        self.n_in, self.n_out = mg_model.N_IN, mg_model.N_OUT
        self.rx = mg_proto.Receiver()
        self.enc = mg_proto.Encoder()
        self.reply = bytearray(mg_proto.MAX_BODY)
        self.sums = [0] * self.n_out
        self.last = bytearray(self.n_out)
        self.cache_body = bytearray(mg_proto.MAX_BODY)   # the last stepping reply
        self.cache_req = bytearray(mg_proto.MAX_BODY)    # and its request's body (t, frames)
        self.reset_state()
        self.packet(T_BOOT, 0, bytes((mg_proto.VERSION,)), 1)

    # ---- output ------------------------------------------------------------------------
    def packet(self, typ, seq, body, n):
        self.send(self.enc.frame(typ, seq, body, n))

    def error(self, seq, code, req_type, detail):
        self.packet(T_ERROR, seq, struct.pack("<BBI", code, req_type, detail & 0xFFFFFFFF), 6)

    # ---- state -------------------------------------------------------------------------
    def reset_state(self):
        self.model.reset()
        for i in range(self.n_out):
            self.sums[i] = 0
            self.last[i] = 0
        self.steps = 0
        self.ticks = 0
        self.run_flags = 0
        self.cache_type = 0

    def cache_hit(self, typ, seq, body):
        """Is this stepping request a retransmission of the one just executed (the same type,
        seq and body bytes, with no step or reset since)?"""
        ln = len(body)
        return (self.cache_type == typ and self.cache_seq == seq and self.cache_req_len == ln
                and self.steps == self.cache_end and mg_proto.same(body, self.cache_req, ln))

    def cache_store(self, typ, seq, body, n):
        ln = len(body)
        self.cache_req[:ln] = body
        self.cache_type, self.cache_seq, self.cache_req_len, self.cache_end, self.cache_len = \
            typ, seq, ln, self.steps, n

    # ---- requests ----------------------------------------------------------------------
    def hello(self, seq):
        r = self.reply
        struct.pack_into("<BBHI", r, 0, mg_proto.VERSION, TICK_MICROSECONDS, mg_proto.MAX_BODY, 1)
        r[8:16] = mg_model.MODEL_ID
        struct.pack_into("<HHIH", r, 16, self.n_in, self.n_out, mg_model.MACS_PER_STEP,
                         mg_proto.RX_BUF)
        n = 26
        for s in (board_name(), mg_model.NAME[:64]):
            b = s.encode()
            r[n] = len(b)
            r[n + 1:n + 1 + len(b)] = b
            n += 1 + len(b)
        self.packet(T_HELLO | T_REPLY, seq, r, n)

    def steps_request(self, typ, seq, body, with_logits):
        n_in, n_out = self.n_in, self.n_out
        ln = len(body)
        if ln < 4 or n_in == 0 or (ln - 4) % n_in != 0 or ln == 4:
            self.error(seq, E_BAD_LENGTH, typ, n_in)
            return
        k = (ln - 4) // n_in
        if typ == T_STEP and k != 1:
            self.error(seq, E_BAD_LENGTH, typ, n_in)
            return
        if n_out > MAX_OUT or (with_logits and 4 + k * n_out > mg_proto.MAX_BODY):
            self.error(seq, E_TOO_LARGE, typ, n_out)
            return
        offset = struct.unpack_from("<I", body, 0)[0]
        out = self.cache_body
        if self.cache_hit(typ, seq, body):
            self.packet(typ | T_REPLY, seq, out, self.cache_len)
            return
        if offset != self.steps:
            self.error(seq, E_BAD_OFFSET, typ, self.steps)
            return
        model, sums, last = self.model, self.sums, self.last
        n = 4
        t0 = time.ticks_us()
        t1 = time.ticks_us()
        while t1 == t0:                      # start on a tick edge, as the C app
            t1 = time.ticks_us()
        for j in range(k):
            logits = model.step(body[4 + j * n_in:4 + (j + 1) * n_in])
            for i in range(n_out):
                v = logits[i]
                sums[i] += v
                last[i] = v & 0xFF
            self.steps += 1
            if with_logits:
                out[n:n + n_out] = last
                n += n_out
        self.ticks += time.ticks_diff(time.ticks_us(), t1)
        struct.pack_into("<I", out, 0, self.steps & 0xFFFFFFFF)
        self.cache_store(typ, seq, body, n)
        self.packet(typ | T_REPLY, seq, out, n)

    def run_end(self, seq, body):
        n_out, ln = self.n_out, len(body)
        if ln != 0 and ln != 2:
            self.error(seq, E_BAD_LENGTH, T_RUN_END, 2)
            return
        first = struct.unpack_from("<H", body, 0)[0] if ln == 2 else 0
        if n_out > MAX_OUT:
            self.error(seq, E_TOO_LARGE, T_RUN_END, n_out)
            return
        count = min(n_out - first if first < n_out else 0, (mg_proto.MAX_BODY - 18) // 5)
        r = self.reply
        struct.pack_into("<IIIHHH", r, 0, self.steps & 0xFFFFFFFF, self.ticks & 0xFFFFFFFF,
                         (self.ticks >> 32) & 0xFFFFFFFF, n_out, first, count)
        n = 18
        for i in range(count):
            struct.pack_into("<i", r, n, self.sums[first + i])
            n += 4
        for i in range(count):
            r[n] = self.last[first + i]
            n += 1
        self.packet(T_RUN_END | T_REPLY, seq, r, n)

    def dispatch(self, version, typ, seq, body):
        if version != mg_proto.VERSION:
            self.error(seq, E_VERSION, typ, mg_proto.VERSION)
        elif typ == T_HELLO:
            if len(body):
                self.error(seq, E_BAD_LENGTH, typ, 0)
            else:
                self.hello(seq)
        elif typ == T_RESET or typ == T_RUN_BEGIN:
            want = 1 if typ == T_RUN_BEGIN else 0
            if len(body) != want:
                self.error(seq, E_BAD_LENGTH, typ, want)
                return
            self.reset_state()
            if typ == T_RUN_BEGIN:
                self.run_flags = body[0] & RUN_F_STEP_LOGITS
            self.reply[0] = self.run_flags
            self.packet(typ | T_REPLY, seq, self.reply, 1)
        elif typ == T_STEP:
            self.steps_request(typ, seq, body, True)
        elif typ == T_RUN_CHUNK:
            self.steps_request(typ, seq, body, self.run_flags & RUN_F_STEP_LOGITS)
        elif typ == T_RUN_END:
            self.run_end(seq, body)
        else:
            self.error(seq, E_UNKNOWN_TYPE, typ, 0)

    def feed(self, byte):
        ev = self.rx.feed(byte)
        if ev is None:
            return
        if ev[0] == "packet":
            if ev[2] & T_REPLY:
                return                  # a device-to-host type (an echo): ignore
            self.dispatch(ev[1], ev[2], ev[3], ev[4])
        else:                           # a frame-level error, named by the frame's seq/type
            self.error(ev[2], ev[1], ev[3],
                       mg_proto.MAX_BODY if ev[1] == mg_proto.E_OVERSIZE else 0)


def main(link=None):
    """Serve the protocol on link (default: the REPL's stdio) until its input closes."""
    import micropython
    link = link if link is not None else StdioLink()
    if hasattr(micropython, "kbd_intr"):
        micropython.kbd_intr(-1)
    try:
        app = App(link.write)
        while True:
            try:
                data = link.read(100)
            except EOFError:
                return
            for b in data:
                try:
                    app.feed(b)
                except Exception as e:   # noqa: BLE001 - a bad frame must never stop the app
                    sys.print_exception(e, sys.stderr) if hasattr(sys, "print_exception") \
                        else print(repr(e), file=sys.stderr)
                    app.rx = mg_proto.Receiver()
    finally:
        if hasattr(micropython, "kbd_intr"):
            micropython.kbd_intr(3)


if __name__ == "__main__":
    main()
