"""The serial protocol's framing for MicroPython (docs/protocol.md; C: mcu/app/mg_proto.c).

packet = version u8 | type u8 | seq u8 | len u16 | body[len] | crc16 u16 (little-endian),
wire = 0x00 | COBS(packet) | 0x00. CRC-16/CCITT-FALSE over version..body.
"""
import micropython

VERSION = 1
HEADER = 5
MAX_BODY = 240
RX_BUF = 256

# error codes
E_CRC = 1
E_COBS = 2
E_TRUNCATED = 3
E_OVERSIZE = 4


@micropython.viper
def crc16(buf: ptr8, n: int, crc: int) -> int:
    """CRC-16/CCITT-FALSE update of crc over buf[0..n) (init 0xFFFF)."""
    i = 0
    while i < n:
        crc ^= int(buf[i]) << 8
        b = 0
        while b < 8:
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
            b += 1
        i += 1
    return crc


def cobs_decode(src, n, dst):
    """Decode src[0..n) into dst; returns the decoded length or -1 (invalid encoding)."""
    i = j = 0
    cap = len(dst)
    if n == 0:
        return -1
    while i < n:
        code = src[i]
        i += 1
        if code == 0 or code - 1 > n - i:
            return -1
        for _ in range(code - 1):
            b = src[i]
            i += 1
            if b == 0 or j >= cap:
                return -1
            dst[j] = b
            j += 1
        if code != 0xFF and i < n:
            if j >= cap:
                return -1
            dst[j] = 0
            j += 1
    return j


def cobs_encode(src, n, dst):
    """Minimal COBS of src[0..n) into dst (at least n + n // 254 + 1 bytes); returns length."""
    code_pos, pos, code = 0, 1, 1
    for k in range(n):
        b = src[k]
        if b == 0:
            dst[code_pos] = code
            code_pos, pos, code = pos, pos + 1, 1
            continue
        dst[pos] = b
        pos += 1
        code += 1
        if code == 0xFF:
            dst[code_pos] = code
            code_pos, pos, code = pos, pos + 1, 1
            if k == n - 1:
                return pos - 1      # ended right after a full block: minimal form
    dst[code_pos] = code
    return pos


@micropython.viper
def same(a: ptr8, b: ptr8, n: int) -> bool:
    """a[0..n) == b[0..n), byte by byte, without allocating."""
    i = 0
    while i < n:
        if a[i] != b[i]:
            return False
        i += 1
    return True


def peek_header(frame, n):
    """(seq, type) read from the intact start of a COBS frame frame[0..n) that may be damaged
    further on (mg_proto.c peek_header), or (0, 0) if its first 3 packet bytes are not there."""
    head = [0, 0, 0]
    i = j = 0
    while i < n and j < 3:
        code = frame[i]
        i += 1
        if code == 0:
            return 0, 0
        k = 1
        while k < code and j < 3:
            if i >= n or frame[i] == 0:
                return 0, 0
            head[j] = frame[i]
            j += 1
            i += 1
            k += 1
        if j < 3 and code != 0xFF:
            if i >= n:
                return 0, 0         # the last block: no implicit zero follows it
            head[j] = 0
            j += 1
    return (head[2], head[1]) if j == 3 else (0, 0)


class Receiver:
    """Byte-wise frame receiver: feed() returns None, ('packet', version, type, seq, body
    memoryview) or ('error', code, seq, type). Same rules as mg_rx_feed: frames over RX_BUF
    bytes are dropped until the next delimiter and reported as OVERSIZE, an intact packet
    with a body over MAX_BODY bytes too; an error names the frame's seq and type when its
    intact start holds them (else 0)."""

    def __init__(self):
        self.buf = bytearray(RX_BUF)
        self.dec = bytearray(RX_BUF)
        self.n = 0
        self.overflow = False

    def feed(self, byte):
        if byte != 0:
            if self.overflow:
                return None
            if self.n >= RX_BUF:
                self.overflow = True
                return None
            self.buf[self.n] = byte
            self.n += 1
            return None
        n, self.n = self.n, 0
        if self.overflow:
            self.overflow = False
            seq, typ = peek_header(self.buf, n)      # the first RX_BUF bytes are kept
            return ("error", E_OVERSIZE, seq, typ)
        if n == 0:
            return None
        return self.parse(n)

    def parse(self, n):
        seq, typ = peek_header(self.buf, n)
        d = self.dec
        ln = cobs_decode(self.buf, n, d)
        if ln < 0:
            return ("error", E_COBS, seq, typ)
        if ln < HEADER + 2:
            return ("error", E_TRUNCATED, seq, typ)
        blen = d[3] | (d[4] << 8)
        if blen + HEADER + 2 != ln:
            return ("error", E_TRUNCATED, seq, typ)
        if crc16(d, ln - 2, 0xFFFF) != d[ln - 2] | (d[ln - 1] << 8):
            return ("error", E_CRC, seq, typ)
        if blen > MAX_BODY:
            # intact, but longer than the protocol allows (241..248 bytes fit RX_BUF)
            return ("error", E_OVERSIZE, seq, typ)
        return ("packet", d[0], d[1], d[2], memoryview(d)[HEADER:HEADER + blen])


class Encoder:
    """Builds wire frames (leading 0x00, COBS, trailing 0x00) in preallocated buffers."""

    def __init__(self):
        self.pkt = bytearray(HEADER + MAX_BODY + 2)
        self.wire = bytearray(HEADER + MAX_BODY + 2 + 4)

    def frame(self, typ, seq, body, n):
        """memoryview of the wire bytes for a packet with body[0..n)."""
        p = self.pkt
        p[0] = VERSION
        p[1] = typ
        p[2] = seq
        p[3] = n & 0xFF
        p[4] = n >> 8
        p[HEADER:HEADER + n] = body[:n]
        crc = crc16(p, HEADER + n, 0xFFFF)
        p[HEADER + n] = crc & 0xFF
        p[HEADER + n + 1] = crc >> 8
        w = self.wire
        w[0] = 0
        k = cobs_encode(p, HEADER + n + 2, memoryview(w)[1:])
        w[k + 1] = 0
        return memoryview(w)[:k + 2]
