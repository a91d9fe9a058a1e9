"""Fuzz the C protocol stack (mcu/app: COBS, CRC, parser, dispatcher) on the host under
AddressSanitizer + UndefinedBehaviorSanitizer with >= 1,000,000 random and mutated frames.

The harness (mcu/app/tests/fuzz_proto.c) is seeded and deterministic; it feeds every frame byte
by byte through the whole application (with the toy model and a fake in-memory board), checks
that everything the device sends is a well-formed frame, mixes in probes with exact expected
answers (the reply cache answers only a true retransmission; a body of 241..248 bytes gets
OVERSIZE; a request that lost a byte gets a frame-level ERROR naming its seq), and at the end
checks that HELLO, RESET, STEP (including a retransmitted STEP) and RUN_END still answer."""
import re
import subprocess

import pytest

N_FRAMES = 1_000_000


@pytest.fixture(scope="module")
def fuzzer(host_build):
    res, out = host_build
    if res.returncode != 0 and "sanitize" in res.stderr and "cannot find" in res.stderr:
        pytest.skip("the sanitizer runtimes (libasan/libubsan) are not installed")
    assert res.returncode == 0, res.stdout + res.stderr
    exe = out / "fuzz_proto"
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    assert "libasan" in ldd and "libubsan" in ldd, f"fuzzer is not sanitized:\n{ldd}"
    return exe


def _run(exe, n, seed):
    res = subprocess.run([str(exe), str(n), str(seed)], capture_output=True, text=True,
                         timeout=600, env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
                                           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    print(res.stdout.strip())
    assert res.returncode == 0, f"fuzzer failed (rc {res.returncode}):\n{res.stdout}\n{res.stderr[-4000:]}"
    assert "runtime error" not in res.stderr and "AddressSanitizer" not in res.stderr, res.stderr[-4000:]
    assert "OK (0 failed checks)" in res.stdout
    return res.stdout


@pytest.mark.slow
def test_fuzz_one_million_frames(fuzzer):
    out = _run(fuzzer, N_FRAMES, 20261125)
    m = re.search(r"frames (\d+) \(random (\d+), semantic (\d+), mutated (\d+), valid (\d+), "
                  r"oversized (\d+), probes (\d+)\) bytes (\d+)", out)
    assert m, out
    frames, rnd, sem, mut, valid, over, probes, nbytes = map(int, m.groups())
    assert frames == N_FRAMES >= 1_000_000 and rnd + sem + mut + valid + over + probes == frames
    assert min(rnd, sem, mut, valid, over, probes) > 10_000
    m = re.search(r"probes: cache (\d+), oversize body (\d+), lost byte (\d+) \(seq checked (\d+)\)",
                  out)
    assert m and min(map(int, m.groups())) > 5_000, out
    # the valid frames all parsed back, and the dispatcher saw every error class
    assert f"valid frames parsed back {valid};" in out
    codes = dict(re.findall(r"(\w+) (\d+)", out.split("errors by code:")[1].splitlines()[0]))
    for name in ("crc", "cobs", "truncated", "oversize", "version", "unknown_type",
                 "bad_length", "bad_offset"):
        assert int(codes[name]) > 0, (name, codes)


def test_fuzz_other_seed_smoke(fuzzer):
    _run(fuzzer, 50_000, 7)
