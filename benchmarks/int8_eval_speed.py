"""int8 evaluation speed: TFLite-Micro stepping (convert.stream.Streamer, frame by frame)
against the host C batch (convert/host_eval.py: the generated C package compiled with gcc,
every sequence in one call), on the same test sequences, side by side in one run.

    python -m benchmarks.int8_eval_speed MODEL_DIR [--n 1000] [--tflm-n N] [--json OUT]

MODEL_DIR is a folder written by `python -m mgrade_edge.convert` (model.tflite, test_data.npz). The
first --n test sequences (each over its own length) are evaluated by both; a test set with
fewer is cycled up to n. The host batch runs 5 times (the median is reported), each run
followed by a fifth of the TFLite-Micro sequences (their times summed), so that both see the
same load on a shared machine; wall-clock and process CPU time (all threads: the host batch
is split over one thread per CPU, convert/host_eval.py) are reported. --tflm-n times TFLite-Micro on only the first N of them (its rate
is per sequence; default: all n). Prints sequences/s of each, the host build time, and the
speed-up (host rate / TFLite-Micro rate, the build excluded and included); exits 1 if any
logit of the sequences both ran differs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HOST_RUNS = 5       # host batch runs (median), each followed by a 1/HOST_RUNS slice of TFLM


def load(model_dir: Path, n: int):
    """(model bytes, int8 x [n, T, n_in], lengths [n] or None) from a convert folder."""
    import numpy as np

    with np.load(model_dir / "test_data.npz") as z:
        x, lengths = z["x"].astype(np.int8), z["lengths"] if "lengths" in z.files else None
    idx = np.arange(n) % len(x)
    return ((model_dir / "model.tflite").read_bytes(), np.ascontiguousarray(x[idx]),
            None if lengths is None else lengths[idx].astype(np.int32))


def measure(model_dir, n: int = 1000, tflm_n: int | None = None) -> dict:
    import numpy as np

    from mgrade_edge.convert.host_eval import HostModel, tflm_logits

    model_bytes, x, lengths = load(Path(model_dir), n)
    tflm_n = n if tflm_n is None else min(tflm_n, n)
    t0 = time.perf_counter()
    host = HostModel(model_bytes)
    build_s = time.perf_counter() - t0
    # interleaved: a host batch run, then a slice of the TFLite-Micro sequences, HOST_RUNS
    # times, so that both see the same load on a shared machine; wall and CPU time each
    host_wall, host_cpu, tflm_wall, tflm_cpu, ref = [], [], 0.0, 0.0, []
    cuts = np.linspace(0, tflm_n, HOST_RUNS + 1).astype(int)
    for a, b in zip(cuts[:-1], cuts[1:]):
        w, c = time.perf_counter(), time.process_time()
        host_out = host.run(x, lengths)
        host_wall.append(time.perf_counter() - w)
        host_cpu.append(time.process_time() - c)
        w, c = time.perf_counter(), time.process_time()
        ref.append(tflm_logits(model_bytes, x[a:b], None if lengths is None else lengths[a:b]))
        tflm_wall += time.perf_counter() - w
        tflm_cpu += time.process_time() - c
    ref = np.concatenate(ref)
    host_s, host_cpu_s = statistics.median(host_wall), statistics.median(host_cpu)
    tflm_s = tflm_wall
    steps = int(x.shape[1] * n if lengths is None else lengths.sum())
    tflm_rate, host_rate = tflm_n / tflm_s, n / host_s
    return {"model_dir": str(model_dir), "n": n, "tflm_n": tflm_n, "T": int(x.shape[1]),
            "steps": steps, "tflm_s": tflm_s, "tflm_seq_per_s": tflm_rate,
            "host_threads": len(host.libs), "host_build_s": build_s, "host_s": host_s, "host_seq_per_s": host_rate,
            "speedup": host_rate / tflm_rate,
            "tflm_cpu_s": tflm_cpu, "host_cpu_s": host_cpu_s,
            "speedup_cpu": (n / host_cpu_s) / (tflm_n / tflm_cpu),
            "speedup_with_build": (n / (host_s + build_s)) / tflm_rate,
            "identical": bool(np.array_equal(ref, host_out[:tflm_n]))}


def table(r: dict) -> str:
    return "\n".join([
        f"{r['model_dir']}: {r['n']} test sequences, T {r['T']} ({r['steps']} steps)",
        f"  TFLite-Micro stepping   {r['tflm_seq_per_s']:10.1f} seq/s  ({r['tflm_n']} sequences "
        f"in {r['tflm_s']:.2f} s)",
        f"  host C batch            {r['host_seq_per_s']:10.1f} seq/s  ({r['n']} sequences in "
        f"{r['host_s']:.3f} s, median of {HOST_RUNS}, {r['host_threads']} thread(s); build {r['host_build_s']:.1f} s)",
        f"  speed-up {r['speedup']:.1f}x wall clock ({r['speedup_with_build']:.1f}x with the "
        f"build), {r['speedup_cpu']:.1f}x CPU time; "
        f"logits {'identical' if r['identical'] else 'DIFFER'} on the "
        f"{r['tflm_n']} sequences both ran"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.int8_eval_speed",
                                 description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="a `python -m mgrade_edge.convert` output folder")
    ap.add_argument("--n", type=int, default=1000, help="test sequences (default 1000)")
    ap.add_argument("--tflm-n", type=int, default=None,
                    help="time TFLite-Micro on the first N only (default: all n)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    d = Path(a.model_dir)
    if not (d / "model.tflite").is_file() or not (d / "test_data.npz").is_file():
        print(f"int8_eval_speed: error: {d} has no model.tflite and test_data.npz (give a "
              f"`python -m mgrade_edge.convert` output folder)", file=sys.stderr)
        return 2
    if a.n < 1 or (a.tflm_n is not None and a.tflm_n < 1):
        print("int8_eval_speed: error: --n and --tflm-n must be >= 1", file=sys.stderr)
        return 2
    from mgrade_edge.convert.host_eval import HostEvalUnavailable, available

    if not available():
        print("int8_eval_speed: error: gcc not found (the host C batch needs it)",
              file=sys.stderr)
        return 2
    try:
        r = measure(d, a.n, a.tflm_n)
    except HostEvalUnavailable as e:
        print(f"int8_eval_speed: error: {e}", file=sys.stderr)
        return 2
    print(table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
