"""Protocol framing against a second implementation written here from the specifications:
COBS (Cheshire & Baker, minimal form: a frame that ends right after a full 254-byte block
gets no trailing empty block), CRC-16/CCITT-FALSE computed by polynomial division over GF(2)
(not the shift register both products use), and the packet layout of docs/protocol.md
(version, type, seq, u16 little-endian body length, body, u16 LE CRC over all of that).

Checked on structured random inputs (runs of 253/254/255 non-zero bytes, zeros at block
edges) and on malformed frames: the host codec (host_tools/protocol.py) and the C codec
(mcu/app/mg_cobs.c, mg_crc.c, compiled for the host and called through ctypes) must give the
reference's bytes and accept exactly what it accepts.
"""
from __future__ import annotations

import ctypes
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from mgrade_edge.host_tools import protocol as P

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "mcu" / "app"


# ----------------------------------------------------------------- reference, from the specs
def ref_cobs_encode(data: bytes) -> bytes:
    """Split at the zeros; each piece becomes blocks of at most 254 bytes, a full block has
    code 0xFF (no implied zero), the last block of a piece has code len + 1 (implies the
    zero that ended the piece). The data's last piece implies no zero; if it ended exactly
    on a full block, no empty block follows (minimal form)."""
    out = bytearray()
    pieces = data.split(b"\x00")
    for k, piece in enumerate(pieces):
        last = k == len(pieces) - 1
        full_end = False
        while len(piece) >= 254:
            out += b"\xff" + piece[:254]
            piece = piece[254:]
            full_end = True
        if last and full_end and not piece:
            break
        out += bytes([len(piece) + 1]) + piece
    return bytes(out)


def ref_cobs_decode(enc: bytes) -> bytes | None:
    """None when malformed: empty, a zero byte, or a block running past the end."""
    if not enc or 0 in enc:
        return None
    out, i = bytearray(), 0
    while i < len(enc):
        code = enc[i]
        block = enc[i + 1:i + code]
        if len(block) != code - 1:
            return None
        out += block
        i += code
        if code != 0xFF and i < len(enc):
            out.append(0)
    return bytes(out)


def ref_crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: (init * x^(8n) + M(x) * x^16) mod (x^16 + x^12 + x^5 + 1)."""
    n = len(data)
    v = (0xFFFF << (8 * n)) ^ (int.from_bytes(data, "big") << 16)
    poly = 0x11021
    for bit in range(v.bit_length() - 1, 15, -1):
        if v >> bit & 1:
            v ^= poly << (bit - 16)
    return v


def ref_packet(version: int, ptype: int, seq: int, body: bytes) -> bytes:
    pkt = bytes([version, ptype, seq]) + len(body).to_bytes(2, "little") + body
    return pkt + ref_crc16(pkt).to_bytes(2, "little")


# ------------------------------------------------------------------------------- inputs
def structured_inputs(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [b"", b"\x00", b"\x00" * 3, bytes(range(1, 255)), bytes(range(1, 256)),
           bytes(253 * [7]), bytes(254 * [7]) + b"\x00", b"\x00" + bytes(254 * [9]),
           bytes(508 * [5]), bytes(254 * [5]) + b"\x00" + bytes(254 * [6])]
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 4)):
            run = rng.choice([0, 1, 2, 253, 254, 255, rng.randint(0, 600)])
            parts.append(bytes(rng.randint(1, 255) for _ in range(run)))
            parts.append(b"\x00" * rng.choice([0, 1, 1, 2]))
        out.append(b"".join(parts))
    return out


def test_reference_matches_published_vectors():
    assert ref_crc16(b"123456789") == 0x29B1            # the CRC catalogue's check value
    assert ref_crc16(b"") == 0xFFFF
    assert ref_cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert ref_cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))
    assert ref_cobs_encode(b"\x00") == b"\x01\x01"


def test_host_codec_equals_reference():
    for data in structured_inputs(1, 300):
        enc = ref_cobs_encode(data)
        assert P.cobs_encode(data) == enc, (len(data), data[:8])
        assert P.cobs_decode(enc) == data
        assert P.crc16_ccitt(data) == ref_crc16(data)


def malformed(seed: int, count: int) -> list[bytes]:
    """Truncated, extended and random COBS bodies (no 0x00, the delimiter is stripped)."""
    rng = random.Random(seed)
    out = []
    for data in structured_inputs(seed, count):
        enc = ref_cobs_encode(data)
        out += [enc[:-1], enc[:rng.randint(0, len(enc))], enc + bytes([rng.randint(1, 255)])]
        out.append(bytes(rng.randint(1, 255) for _ in range(rng.randint(1, 40))))
    return [b for b in out if b and 0 not in b] + [b"", b"\x03\x01\x00"]


def test_host_decoder_accepts_exactly_what_the_reference_accepts():
    for enc in malformed(2, 150):
        want = ref_cobs_decode(enc)
        if want is None:
            with pytest.raises(P.FrameError):
                P.cobs_decode(enc)
        else:
            assert P.cobs_decode(enc) == want


def test_host_packets_equal_reference_and_bad_ones_are_refused():
    rng = random.Random(3)
    for _ in range(200):
        body = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, P.MAX_BODY)))
        ptype, seq = rng.randint(0, 255), rng.randint(0, 255)
        pkt = ref_packet(P.PROTO_VERSION, ptype, seq, body)
        wire = P.encode_packet(ptype, seq, body)
        assert wire == ref_cobs_encode(pkt) + b"\x00"
        got = P.decode_frame(wire[:-1])
        assert (got.type, got.seq, got.body, got.version) == (ptype, seq, body, P.PROTO_VERSION)
        # length field off by +-1..3, CRC over the body only, CRC of another packet
        n = len(body)
        for bad_len in (n - 1, n + 1, n + 3):
            if 0 <= bad_len < 65536:
                bad = bytearray(pkt)
                bad[3:5] = bad_len.to_bytes(2, "little")
                bad[-2:] = ref_crc16(bytes(bad[:-2])).to_bytes(2, "little")
                with pytest.raises(P.FrameError):
                    P.decode_frame(ref_cobs_encode(bytes(bad)))
        body_crc = pkt[:-2] + ref_crc16(body).to_bytes(2, "little")
        if body_crc != pkt:
            with pytest.raises(P.FrameError):
                P.decode_frame(ref_cobs_encode(body_crc))


# ------------------------------------------------------------------------- the C codec
@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("host gcc not installed")
    so = tmp_path_factory.mktemp("cobs") / "libmgframe.so"
    subprocess.run(["gcc", "-std=c99", "-O1", "-shared", "-fPIC", "-I", str(APP),
                    str(APP / "mg_cobs.c"), str(APP / "mg_crc.c"), "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
    lib.mg_cobs_encode.restype = ctypes.c_size_t
    lib.mg_cobs_encode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                   ctypes.c_size_t]
    lib.mg_cobs_decode.restype = ctypes.c_int
    lib.mg_cobs_decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                   ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    lib.mg_crc16_update.restype = ctypes.c_uint16
    lib.mg_crc16_update.argtypes = [ctypes.c_uint16, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def _c_encode(lib, data: bytes, cap: int | None = None) -> bytes | None:
    cap = len(data) + len(data) // 254 + 1 if cap is None else cap
    dst = ctypes.create_string_buffer(cap + 16)
    n = lib.mg_cobs_encode(data, len(data), dst, cap)
    return dst.raw[:n] if n else None


def _c_decode(lib, enc: bytes) -> bytes | None:
    """The frame sits in a larger receive buffer whose next bytes are not zero (a decoder
    reading past the frame's end must not find a terminator there by luck)."""
    src = ctypes.create_string_buffer(enc + b"\x55" * 8, len(enc) + 8)
    dst = ctypes.create_string_buffer(len(enc) + 16)
    n = ctypes.c_size_t(0)
    rc = lib.mg_cobs_decode(src, len(enc), dst, len(enc), ctypes.byref(n))
    return dst.raw[:n.value] if rc == 0 else None


def test_c_codec_equals_reference(clib):
    for data in structured_inputs(4, 300):
        enc = ref_cobs_encode(data)
        assert _c_encode(clib, data) == enc, (len(data), data[:8])
        assert _c_decode(clib, enc) == data
        assert clib.mg_crc16_update(0xFFFF, data, len(data)) == ref_crc16(data)
        if len(enc) > 1:                             # one byte short of room: refused
            assert _c_encode(clib, data, cap=len(enc) - 1) is None


def test_c_decoder_accepts_exactly_what_the_reference_accepts(clib):
    for enc in malformed(5, 150):
        assert _c_decode(clib, enc) == ref_cobs_decode(enc), enc[:12]
