"""Run the model package over test vectors (unix port or a board with a filesystem).

    micropython mg_check.py IN.bin OUT.bin

IN.bin: u32 S, u32 T, u32 n_in, then int8 x[S][T][n_in]. OUT.bin: for every step of every
sequence (reset before each sequence) the logits followed by the model's STATES outputs
(int8 each). Prints one line: steps, microseconds per step (time.ticks_us: mean and fastest), and the heap
bytes the model module and one Model instance hold (gc.mem_alloc before/after import).
"""
import gc
import struct
import sys
import time

gc.collect()
_before = gc.mem_alloc()
import mg_model  # noqa: E402

gc.collect()
_after_import = gc.mem_alloc()
_m = mg_model.Model()
gc.collect()
_after_model = gc.mem_alloc()


def main(src, dst):
    with open(src, "rb") as f:
        S, T, n_in = struct.unpack("<III", f.read(12))
        x = f.read()
    if n_in != mg_model.N_IN or len(x) != S * T * n_in:
        raise SystemExit("vector file does not match the model")
    m = _m
    xs = memoryview(x)
    us = 0
    best = 1 << 30
    with open(dst, "wb") as out:
        for s in range(S):
            m.reset()
            for t in range(T):
                k = (s * T + t) * n_in
                t0 = time.ticks_us()
                logits = m.step(xs[k:k + n_in])
                dt = time.ticks_diff(time.ticks_us(), t0)
                us += dt
                best = dt if dt < best else best
                out.write(logits)
                for name in mg_model.STATES:
                    out.write(m.state(name))
    print("steps %d us_per_step %.1f us_min %d import_bytes %d model_bytes %d"
          % (S * T, us / max(1, S * T), best, _after_import - _before,
             _after_model - _after_import))


main(sys.argv[1], sys.argv[2])
