"""Shared timing helpers for the benchmark scripts (round-robin medians, tables, JSON)."""
from __future__ import annotations

import json
import platform
import statistics
import time

import torch


def time_round_robin(fns: dict, repeats: int, warmup: int = 2, block: int = 3) -> dict:
    """Time every callable in `fns`: rounds of blocks. In each round every variant runs
    `warmup` untimed calls then `block` timed calls back to back (steady state, as in a
    training loop: the allocator has settled on that variant's tensor sizes); rounds
    interleave the variants so that slow drifts of the machine hit all of them alike.
    `repeats` timed calls per variant in all. Returns {name: {"median_ms", "min_ms",
    "times_ms"}}."""
    times = {k: [] for k in fns}
    while min(len(v) for v in times.values()) < repeats:
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(min(block, repeats - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "times_ms": v}
            for k, v in times.items()}


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str]]):
    """rows: dicts; columns: (key, header). Floats print with 2 decimals."""
    print(f"\n{title}")
    cells = [[h for _, h in columns]]
    for row in rows:
        cells.append([f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k])
                      for k, _ in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, c in enumerate(cells):
        print("| " + " | ".join(s.rjust(w) for s, w in zip(c, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def write_json(path: str, payload: dict):
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"\nwrote {path}")


def benchmark_args(doc: str, default_configs: str, dims: str) -> "argparse.ArgumentParser":
    """The options every benchmark script takes; `dims` names a config's fields, e.g. "TxBxH"."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", default=default_configs, help=f"comma-separated {dims}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT")
    return ap


def run_benchmark(name: str, title: str, args, dims: str, make_fns) -> list[dict]:
    """Time `make_fns(*config)` -> {variant: callable} for every config in `args.configs`
    (fields `dims`, e.g. "TxBxH"), print one table with ratios to the "ours" variant and write
    `args.json` if given. Returns the rows (with every timed call)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    keys = dims.split("x")
    results = []
    for cfg in args.configs.split(","):
        values = [int(v) for v in cfg.lower().split("x")]
        if len(values) != len(keys):
            raise SystemExit(f"error: config {cfg!r} is not {dims}")
        timed = time_round_robin(make_fns(*values), args.repeats, args.warmup)
        ours = timed["ours"]["median_ms"]
        for variant, t in timed.items():
            results.append({**dict(zip(keys, values)), "variant": variant,
                            "median_ms": t["median_ms"], "min_ms": t["min_ms"],
                            "ours_speedup": t["median_ms"] / ours, "times_ms": t["times_ms"]})
    print_table(f"{title}, float32, {args.threads} threads, median of {args.repeats} "
                f"(ours_speedup = variant / ours)", results,
                [(k, k) for k in keys] + [("variant", "variant"), ("median_ms", "median ms"),
                                          ("min_ms", "min ms"), ("ours_speedup", "ours speedup")])
    if args.json:
        write_json(args.json, {"benchmark": name, "env": environment(), "args": vars(args),
                               "results": results})
    return results
