"""Device accuracy on shapes nobody tuned (issue 30): the default conversion of the
configs/ladder/ models, with the form `--form auto` chose and the next-cheaper form.

    python -m benchmarks.ladder_table --runs RUNS [--configs configs/ladder] [--n-test 1000]
                                      [--val-n N] [--out-name int8]
                                      [--md OUT.md] [--json OUT.json] [--no-convert]

RUNS/NAME is the run of configs/ladder/NAME.toml (train each first:
`python -m mgrade_edge.training.train configs/ladder/NAME.toml --out RUNS/NAME`). Per run:

1. `python -m mgrade_edge.convert RUNS/NAME --out RUNS/NAME/int8 --n-test N` (the defaults:
   --form auto on 300 validation sequences), whose report.json gives the float and device
   (TFLite-Micro arithmetic, host C package) accuracy on the first N test sequences, the chosen
   form, its instructions per step (emulated Cortex-M4, fast and portable C path) and RAM;
2. the rung below the chosen one (report.json form_next_cheaper), its device accuracy on the
   same test sequences (form_next_cheaper_test_acc: what the cheaper form would have given).

Prints one Markdown table (and writes it with --md). --no-convert reads existing outputs.
--val-n N passes convert's --val-n (the validation sequences auto chooses on; default 300),
--out-name NAME writes RUNS/NAME/<NAME> instead of RUNS/NAME/int8.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 3600


def convert(run: Path, out: Path, n_test: int, extra: list[str]) -> dict:
    """Run the converter (a subprocess, as a user would) and return its report.json."""
    cmd = [sys.executable, "-m", "mgrade_edge.convert", str(run), "--out", str(out),
           "--n-test", str(n_test), "--quiet"] + extra
    print("$ " + " ".join(cmd[1:]), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    print(r.stdout, end="", flush=True)
    rep = json.loads((out / "report.json").read_text()) if r.returncode == 0 else None
    if rep and rep.get("forms_tried"):
        from mgrade_edge.convert.ladder import table
        print(table(rep), flush=True)
    if r.returncode != 0:
        raise RuntimeError(f"convert failed on {run}: {r.stderr.strip().splitlines()[-1:]}")
    return rep


def resources(rep: dict) -> tuple[float | None, float | None, int | None]:
    """(instructions per step fast, portable, RAM bytes fast path) of a report's resource
    table (the chosen form, full measurement)."""
    res = rep.get("resources") or {}
    paths = res.get("paths") or {}
    ips = [((paths.get(k) or {}).get("instructions_per_step") or {}).get("mean")
           for k in ("fast", "portable")]
    ram = ((paths.get("fast") or {}).get("ram") or {}).get("total")
    return ips[0], ips[1], ram


def row(name: str, run: Path, n_test: int, do_convert: bool, extra: list | None = None,
        out_name: str = "int8") -> dict:
    out = run / out_name
    rep = convert(run, out, n_test, extra or []) if do_convert else \
        json.loads((out / "report.json").read_text())
    form = rep.get("form") or ("input16" if rep.get("input_bits") == 16 else
                               "state16" if rep.get("state_bits") == 16 else "int8")
    nxt = rep.get("form_next_cheaper")
    fast, portable, ram = resources(rep)
    tried = {t["form"]: t for t in rep.get("forms_tried") or []}
    return {"model": name, "float_acc": rep["float_acc"], "hardened_acc": rep["hardened_acc"],
            "device_acc": rep["int8_acc_tflm"], "form": form, "ips_fast": fast,
            "ips_portable": portable, "ram": ram, "val_float": rep.get("float_val_acc"),
            "val_acc": (tried.get(form) or {}).get("val_acc"), "next": nxt,
            "next_device_acc": rep.get("form_next_cheaper_test_acc"),
            "next_val_acc": (tried.get(nxt) or {}).get("val_acc"),
            "next_ips_fast": (tried.get(nxt) or {}).get("instructions_per_step", {}).get("fast")
            if nxt in tried and tried[nxt].get("instructions_per_step") else None,
            "forms_tried": rep.get("forms_tried"), "n_test": rep["n_test"]}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def num(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def markdown(rows: list[dict]) -> str:
    head = ["model", "float %", "device %", "device - float", "chosen form",
            "instr/step fast (portable)", "RAM B", "next cheaper form: device % (val %)",
            "val float / chosen %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = None if r["device_acc"] is None else 100 * (r["device_acc"] - r["float_acc"])
        nxt = ("-" if not r["next"] else
               f"{r['next']}: {pct(r['next_device_acc'])} ({pct(r['next_val_acc'])})")
        lines.append("| " + " | ".join([
            r["model"], pct(r["float_acc"]), pct(r["device_acc"]),
            "-" if d is None else f"{d:+.2f}", r["form"],
            f"{num(r['ips_fast'])} ({num(r['ips_portable'])})", num(r["ram"]), nxt,
            f"{pct(r['val_float'])} / {pct(r['val_acc'])}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ladder_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="folder of the trained runs (RUNS/NAME)")
    p.add_argument("--configs", default="configs/ladder", help="the configs (default "
                                                               "configs/ladder)")
    p.add_argument("--n-test", type=int, default=1000, help="test sequences (default 1000)")
    p.add_argument("--only", help="comma-separated config names")
    p.add_argument("--val-n", type=int, help="convert's --val-n (default: convert's, 300)")
    p.add_argument("--out-name", default="int8", help="convert output folder in each run "
                                                        "(default int8)")
    p.add_argument("--no-convert", action="store_true", help="read existing convert outputs")
    p.add_argument("--md", help="write the table here")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    names = sorted(c.stem for c in Path(args.configs).glob("*.toml"))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    rows = []
    for name in names:
        run = Path(args.runs) / name
        if not (run / "checkpoint.pt").is_file():
            print(f"skip {name}: no {run}/checkpoint.pt (python -m mgrade_edge.training.train "
                  f"{args.configs}/{name}.toml --out {run})", flush=True)
            continue
        try:
            rows.append(row(name, run, args.n_test, not args.no_convert,
                            [] if args.val_n is None else ["--val-n", str(args.val_n)],
                            args.out_name))
        except (RuntimeError, OSError, KeyError, subprocess.SubprocessError) as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            continue
        print(markdown(rows[-1:]), flush=True)
    md = markdown(rows)
    print(md)
    if args.md:
        Path(args.md).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
