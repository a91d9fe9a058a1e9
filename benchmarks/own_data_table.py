"""Results table of deployed runs (docs/results.md, "Your own data"): one markdown row per run.

    python -m benchmarks.own_data_table RUN [RUN ...]

Each RUN folder holds what the deploy steps wrote: checkpoint.pt, int8/report.json
(python -m mgrade_edge.convert), memory.json (python -m mgrade_edge.training.memory RUN --harden --json),
mcu_cost.json (python -m benchmarks.mcu_cost RUN/int8 --json ...) and deploy.log with the
output of `make compare RUN=RUN` (the device's accuracy on the emulated board).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def row(run: Path) -> dict:
    import torch

    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    m = ckpt["config"]["model"]
    family = "mGRADE" if m["use_conv"] and m["use_rnn"] else ("minGRU" if m["use_rnn"]
                                                              else "conv (dcls)")
    rep = json.loads((run / "int8" / "report.json").read_text())
    mem = json.loads((run / "memory.json").read_text())
    cost = json.loads((run / "mcu_cost.json").read_text())
    log = (run / "deploy.log").read_text()
    dev = re.search(r"device acc : ([\d.]+)%", log)
    same = re.search(r"max \|diff\| : (\d+) int8 logits.*?, (\d+) in the int32 sums", log)
    total = mem["total"].get("trimmed", mem["total"]["plain"])
    return {"run": run.name, "family": family, "d_model": m["d_model"],
            "n_layers": m["n_layers"], "params": mem["train_params"],
            "float": 100 * rep["float_acc"], "int8_host": 100 * rep["int8_acc_tflm"],
            "device": float(dev.group(1)) if dev else None,
            "device_vs_host_lsb": int(same.group(1)) + int(same.group(2)) if same else None,
            "int8_bytes": total["int8_bytes"], "ram": cost["memory"]["ram"]["total"],
            "flash": cost["memory"]["flash"]["total"],
            "instr": cost["instructions_per_step"]["mean"], "macs": cost["macs_per_step"]}


def main(argv=None) -> int:
    runs = [Path(r) for r in (sys.argv[1:] if argv is None else argv)]
    print("| run | model | params | float test | int8 host (TFLM) | int8 on device | "
          "int8 model bytes (params + state) | package RAM / flash B | instructions / step | "
          "MACs / step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        r = row(run)
        dev = "n/a" if r["device"] is None else f"{r['device']:.2f}%"
        print(f"| {r['run']} | {r['family']} H={r['d_model']} L={r['n_layers']} | {r['params']} "
              f"| {r['float']:.2f}% | {r['int8_host']:.2f}% | {dev} | {r['int8_bytes']} | "
              f"{r['ram']} / {r['flash']} | {r['instr']:.0f} | {r['macs']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
