"""Cost of a generated mGRADE model package on the emulated cores (and their build helpers).

    python -m benchmarks.mcu_cost MODEL_DIR [--seqs 20] [--json OUT.json] [--xtensa]
    python -m benchmarks.mcu_cost MODEL_DIR --cores [CORE ...] [--profile]   (every core, both paths)

--cores: instructions/step on Cortex-M0 (QEMU microbit), M3 (mps2-an385), M4 (mps2-an386), M7
(mps2-an500), M33 (mps2-an505), M55 (mps3-an547), RV32IMC (virt) and Xtensa lx106, the fast
and the portable kernel path each, logits checked against TFLite-Micro, and whether the
protocol firmware with the model fits the micro:bit's 16 KiB of RAM. Without --cores:

MODEL_DIR is a converted model folder (model.tflite, test_data.npz, report.json). The script
generates the C package (`convert.codegen`) and TFLM reference vectors for the first --seqs
test sequences, builds mcu/runtime/tests/model_check.c for QEMU mps2-an386 (Cortex-M4F,
arm-none-eabi-gcc -O2), runs it under `qemu-system-arm -icount shift=0` and reports:

* instructions per step (mean/min/max): SysTick ticks x 40 (25 MHz SysTick, 1 instruction per
  ns with -icount shift=0; the harness measures the ratio on a loop of known length). These are
  emulated instructions, not cycles: QEMU has no pipeline or memory timing.
* MACs per step (graph FC + depthwise; and those the fused kernels execute), instructions/MAC;
* RAM and flash of the package + runtime (symbol sizes from arm-none-eabi-nm of the linked
  timing build, and arm-none-eabi-size of the objects): model state (rings, minGRU states,
  step counter), scratch arena, constants, code;
* the trimmed rings against the graph's R*H ring and a plain K-frame buffer;
* TFLM's arena (`convert.stream.tflm_arena_bytes`) and the folder's report.json.

The timing build compares the logits only (no MG_MODEL_DEBUG copies in the step); the test
build (tests/test_mcu_model.py) compares every state too. The cross-build / QEMU run / sizing
harness (build_check, run_check, memory_split, TARGETS) is mgrade_edge.convert.mcu_harness,
shared with the resource table and the tests; the host runner (build_host_runner) is here.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mgrade_edge.convert.mcu_harness import (  # noqa: F401  (the harness, re-used by name)
    ARM_CPU, CORES, DSP_CORES, HARNESS, MCU, PACKAGE_SRCS, PROFILE_KINDS, RUNTIME, RUNTIME_SRCS,
    TARGETS, WARN, board_cpu_flags, build_check, have, header_defines, memory_split, nm_sizes,
    run_check, run_tool)


def generate(model_dir, gen_dir, n_seq: int = 50) -> dict:
    """The model package + TFLM reference vectors (first n_seq test sequences) in gen_dir.
    Returns the codegen summary with the reference arrays under 'ref'."""
    from mgrade_edge.convert.codegen import generate as codegen
    from mgrade_edge.convert.vectors import reference_steps, write_test_vectors

    model_dir = Path(model_dir)
    model_bytes = (model_dir / "model.tflite").read_bytes()
    info = codegen(model_bytes, gen_dir)
    if info.get("kind") != "mgrade":
        raise RuntimeError(f"{model_dir}/model.tflite has no mgrade metadata")
    x = np.load(model_dir / "test_data.npz")["x"][:n_seq]
    x = np.ascontiguousarray(x.astype(np.int8))
    logits, states = reference_steps(model_bytes, x)
    write_test_vectors(gen_dir, x, logits, states)
    info["ref"] = {"x": x, "logits": logits, "states": states}
    return info


def build_host_runner(gen_dir, exe, fast: bool = False) -> Path:
    """mcu/runtime/tests/model_runner.c + package + runtime with host gcc (MG_MODEL_DEBUG);
    fast: the MG_FAST path (DSP instructions in plain C) instead of the portable one."""
    gen_dir = Path(gen_dir)
    srcs = [HARNESS / "model_runner.c"] + [gen_dir / s for s in PACKAGE_SRCS] + \
        [RUNTIME / s for s in RUNTIME_SRCS]
    run_tool(["gcc", *WARN, "-pedantic", "-O2", "-DMG_MODEL_DEBUG", f"-DMG_FAST={int(fast)}",
              "-I", RUNTIME, "-I", gen_dir, *srcs, "-o", exe])
    return Path(exe)


def run_host_runner(exe, x: np.ndarray) -> np.ndarray:
    """Per-step logits+states [S, T, n_out + states] from the host runner."""
    S, T, _ = x.shape
    inp = np.array([S, T], np.uint32).tobytes() + x.astype(np.int8).tobytes()
    out = subprocess.run([str(exe)], input=inp, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.int8).reshape(S, T, -1)


PROFILE_LABELS = {"delay": "delay gather + taps", "fc": "FC (encoder, MLP)",
                  "mingru": "minGRU (FCs + gates)", "elem": "elementwise (residual, norm)",
                  "readout": "readout FC"}


def cost(model_dir, n_seq: int = 20, work=None, xtensa: bool = False) -> dict:
    from mgrade_edge.convert.stream import tflm_arena_bytes

    model_dir = Path(model_dir)
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="mcu_cost_")
        work = tmp.name
    work = Path(work)
    try:
        info = generate(model_dir, work / "gen", n_seq)
        macs, macs_exec = info["macs_per_step"], info["macs_executed"]
        paths = {}
        for name, fast in (("fast", True), ("portable", False)):
            b = build_check("qemu-cm4", work / "gen", work / "qemu-cm4", debug=False, fast=fast)
            run = run_check(b)
            bp = build_check("qemu-cm4", work / "gen", work / "qemu-cm4", debug=False,
                             fast=fast, profile=True)
            prof = run_check(bp)
            ips = run["instructions_per_step"]
            paths[name] = {
                "logits_mismatched_bytes": run["mismatched_bytes"],
                "logits_mismatched_steps": run["mismatched_steps"],
                "instructions_per_step": ips,
                "instructions_per_mac": ips["mean"] / macs,
                "instructions_per_executed_mac": ips["mean"] / macs_exec,
                "profile_per_step": prof["profile_per_step"],
                "profile_total_per_step": prof["instructions_per_step"]["mean"],
                "memory": memory_split(b),
            }
        fastp = paths["fast"]
        ips, mem = fastp["instructions_per_step"], fastp["memory"]
        res = {
            "model_dir": str(model_dir), "model_id": info["model_id"],
            "target": TARGETS["qemu-cm4"]["label"],
            "timing": "emulated instructions: SysTick ticks x instructions/tick (QEMU -icount "
                      "shift=0: 1 instruction/ns, SysTick 25 MHz -> 40 per tick), not cycles",
            "profile_note": "per op kind from a build with MG_PROF marks (each mark adds ~10 "
                            "instructions, charged to the next kind); totals above are from "
                            "the build without marks",
            "sequences": run["seqs"], "steps": run["steps"],
            "logits_mismatched_steps": sum(p["logits_mismatched_steps"] for p in paths.values()),
            "logits_mismatched_bytes": sum(p["logits_mismatched_bytes"] for p in paths.values()),
            "instructions_per_tick": run["instructions_per_tick"],
            "instructions_per_step": ips,
            "macs_per_step": macs, "macs_executed_per_step": macs_exec,
            "instructions_per_mac": ips["mean"] / macs,
            "instructions_per_executed_mac": ips["mean"] / macs_exec,
            "memory": mem,
            "paths": paths,
            "rings": {"trimmed_bytes": info["ring_bytes"],
                      "graph_ring_bytes": info["ring_graph_bytes"],
                      "plain_bytes": info["ring_plain_bytes"],
                      "plain_from_kernel_span": info["ring_plain_from_kernel_span"],
                      "saved_vs_plain": info["ring_plain_bytes"] - info["ring_bytes"],
                      "saved_vs_graph_ring": info["ring_graph_bytes"] - info["ring_bytes"]},
            "codegen": {k: info[k] for k in ("arena_bytes", "const_bytes", "state_bytes",
                                             "h_bytes", "ring_period")},
            "tflm_arena_bytes": tflm_arena_bytes((model_dir / "model.tflite").read_bytes()),
        }
        rep = model_dir / "report.json"
        res["report"] = json.loads(rep.read_text()) if rep.exists() else None
        if xtensa:
            res["xtensa_lx106"] = {"target": TARGETS["xtensa-lx106"]["label"],
                                   "note": "CCOUNT ticks scaled by a calibration loop; "
                                           "emulated instructions"}
            for name, fast in (("portable", None), ("fast_emulated_dsp", True)):
                bx = build_check("xtensa-lx106", work / "gen", work / "xtensa", debug=False,
                                 fast=fast)
                rx = run_check(bx)
                res["xtensa_lx106"][name] = {
                    "logits_mismatched_bytes": rx["mismatched_bytes"],
                    "instructions_per_step": rx["instructions_per_step"],
                    "instructions_per_mac": rx["instructions_per_step"]["mean"] / macs}
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def firmware_fit(gen_dir, board: str, out_dir) -> dict:
    """Link the protocol firmware (mcu/Makefile) with the package for `board`: whether it
    fits the board's memory regions, and the used / available bytes the linker reports."""
    r = subprocess.run(["make", "-s", "-C", str(MCU), "firmware", f"BOARD={board}",
                        f"MODEL_SRC={gen_dir}", f"BUILD_DIR={out_dir}"],
                       capture_output=True, text=True)
    res = {"board": board, "fits": r.returncode == 0}
    unit = {"B": 1, "KB": 1024, "MB": 1 << 20}
    for region, used, u1, size, u2 in re.findall(r"(FLASH|RAM):\s+(\d+) (B|KB|MB)\s+(\d+) "
                                                 r"(B|KB|MB)", r.stdout + r.stderr):
        res[region.lower()] = {"used": int(used) * unit[u1], "size": int(size) * unit[u2]}
    if not res["fits"]:
        overflow = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", r.stderr)
        res["overflow"] = {k: int(v) for k, v in overflow}
        if not overflow:
            res["error"] = r.stderr[-1500:]
    return res


def cores_cost(model_dir, n_seq: int = 20, work=None, cores=None, profile: bool = False) -> dict:
    """Instructions/step of the package on every emulated core, both kernel paths (fast: the
    DSP instructions where the core has the Arm DSP extension, their plain-C form elsewhere;
    portable: the reference kernels), logits checked against TFLite-Micro; and whether the
    protocol firmware with this model fits the micro:bit (qemu-cm0: 16 KiB RAM). profile:
    also the fast path's instructions per op kind on each core (a build with MG_PROF marks)."""
    model_dir = Path(model_dir)
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="mcu_cores_")
        work = tmp.name
    work = Path(work)
    try:
        info = generate(model_dir, work / "gen", n_seq)
        macs = info["macs_per_step"]
        rows = {}
        for core in cores or [*CORES, "xtensa-lx106"]:
            t = TARGETS[core]
            if not have(t["cc"], t["qemu"][0]):
                rows[core] = {"skipped": f"{t['cc']} / {t['qemu'][0]} not installed"}
                continue
            row = {"label": t["label"], "core": t["core"], "dsp": t["dsp"],
                   "default_path": "fast"}           # mg_fast.h: MG_FAST 1 on every target
            for name, fast in (("fast", True), ("portable", False)):
                try:
                    b = build_check(core, work / "gen", work / core, debug=False, fast=fast)
                except RuntimeError as e:
                    if core != "qemu-cm0" or "overflowed" not in str(e):
                        raise
                    row["machine"] = "mps2-an385 (does not fit the micro:bit)"
                    b = build_check("qemu-cm0-an385", work / "gen", work / core, debug=False,
                                    fast=fast)
                r = run_check(b)
                row[name] = {"instructions_per_step": r["instructions_per_step"],
                             "instructions_per_mac": r["instructions_per_step"]["mean"] / macs,
                             "logits_mismatched_bytes": r["mismatched_bytes"],
                             "steps": r["steps"], "exit_code": r["exit_code"]}
                if profile and fast:
                    bp = build_check(b["target"], work / "gen", work / core, debug=False,
                                     fast=True, profile=True)
                    row[name]["profile_per_step"] = run_check(bp)["profile_per_step"]
            row["portable_over_fast"] = (row["portable"]["instructions_per_step"]["mean"] /
                                         row["fast"]["instructions_per_step"]["mean"])
            rows[core] = row
        res = {"model_dir": str(model_dir), "model_id": info["model_id"],
               "macs_per_step": macs, "sequences": n_seq, "cores": rows,
               "timing": "emulated instructions (QEMU -icount shift=0), not cycles",
               "logits_mismatched_bytes": sum(r[p]["logits_mismatched_bytes"]
                                              for r in rows.values() if "fast" in r
                                              for p in ("fast", "portable"))}
        if "qemu-cm0" in rows and "fast" in rows["qemu-cm0"]:
            res["microbit_firmware"] = firmware_fit(work / "gen", "qemu-cm0", work / "fw-cm0")
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def cores_table(res: dict) -> str:
    lines = [f"model {res['model_id']}: {res['macs_per_step']} MACs/step, "
             f"{res['sequences']} test sequences, logits vs TFLite-Micro: "
             f"{res['logits_mismatched_bytes']} mismatched bytes (every core, both paths)",
             f"{'core':<28} {'DSP':<4} {'fast instr/step':>16} {'/MAC':>6} "
             f"{'portable':>10} {'/MAC':>6} {'portable/fast':>13}  default"]
    for core, r in res["cores"].items():
        if "skipped" in r:
            lines.append(f"{core:<28} skipped: {r['skipped']}")
            continue
        f, p = r["fast"], r["portable"]
        lines.append(f"{core + ' (' + r['core'] + ')':<28} {'yes' if r['dsp'] else 'no':<4} "
                     f"{f['instructions_per_step']['mean']:>16,.0f} "
                     f"{f['instructions_per_mac']:>6.2f} "
                     f"{p['instructions_per_step']['mean']:>10,.0f} "
                     f"{p['instructions_per_mac']:>6.2f} {r['portable_over_fast']:>12.2f}x  "
                     f"{r['default_path']}{'' if r['dsp'] else ' (plain C)'}"
                     + (f"  [on {r['machine']}]" if "machine" in r else ""))
    prof = {c: r["fast"]["profile_per_step"] for c, r in res["cores"].items()
            if "fast" in r and "profile_per_step" in r["fast"]}
    if prof:
        lines.append("fast path per op kind (instructions/step, build with MG_PROF marks):")
        lines.append(f"{'core':<28} " + " ".join(f"{k:>9}" for k in PROFILE_KINDS))
        for core, pr in prof.items():
            lines.append(f"{core:<28} " + " ".join(f"{pr[k]:>9,.0f}" for k in PROFILE_KINDS))
    fit = res.get("microbit_firmware")
    if fit:
        if fit["fits"]:
            lines.append(f"micro:bit (qemu-cm0) firmware: fits, RAM {fit['ram']['used']} / "
                         f"{fit['ram']['size']} B, flash {fit['flash']['used']} / "
                         f"{fit['flash']['size']} B")
        else:
            lines.append(f"micro:bit (qemu-cm0) firmware: does not fit "
                         f"({fit.get('overflow') or fit.get('error')})")
    return "\n".join(lines)


def table(res: dict) -> str:
    ips, mem, rings = res["instructions_per_step"], res["memory"], res["rings"]
    rows = [
        ("model", f"{res['model_id']} ({res['steps']} steps, {res['sequences']} sequences)"),
        ("logits vs TFLM", f"{res['logits_mismatched_bytes']} mismatched bytes (both paths)"),
        ("MACs/step", f"{res['macs_per_step']} (graph), {res['macs_executed_per_step']} "
                      "executed"),
    ]
    for name, p in res["paths"].items():
        i = p["instructions_per_step"]
        rows.append((f"{name} instr/step", f"mean {i['mean']:.0f}, min {i['min']:.0f}, max "
                     f"{i['max']:.0f}; {p['instructions_per_mac']:.2f}/MAC (graph), "
                     f"{p['instructions_per_executed_mac']:.2f}/executed MAC"))
        prof = p["profile_per_step"]
        rows.append((f"{name} per op kind", ", ".join(f"{PROFILE_LABELS[k]} {v:.0f}"
                                                      for k, v in prof.items())))
        m = p["memory"]
        rows.append((f"{name} flash", f"{m['flash']['total']} B (weights "
                     f"{m['flash']['constants_weights']}, params "
                     f"{m['flash']['constants_params']}, code {m['flash']['code']}, .data init "
                     f"{m['flash']['data_init']}); RAM {m['ram']['total']} B"))
    rows += [
        ("RAM state", f"{mem['ram']['state_total']} B (rings {mem['ram']['state_rings']}, "
                      f"h {mem['ram']['state_h']}, counter {mem['ram']['state_counter']})"),
        ("RAM scratch", f"{mem['ram']['scratch_arena']} B arena, {mem['ram']['other']} B other "
                        "(fast path: FC input and dot buffers; int8 copies of int16 states)"),
        ("rings", f"trimmed {rings['trimmed_bytes']} B vs graph R*H {rings['graph_ring_bytes']}"
                  f" B vs plain {rings['plain_bytes']} B "
                  + ("(K = kernel_span)" if rings["plain_from_kernel_span"]
                     else "(K = max delay + 1)")),
        ("TFLM arena", f"{res['tflm_arena_bytes']} B"),
    ]
    if "xtensa_lx106" in res:
        for name in ("portable", "fast_emulated_dsp"):
            x = res["xtensa_lx106"][name]
            rows.append((f"lx106 {name}", f"{x['instructions_per_step']['mean']:.0f} instr/step"
                         f", {x['logits_mismatched_bytes']} mismatched bytes"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mcu_cost",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", help="converted model folder (model.tflite, test_data.npz)")
    ap.add_argument("--seqs", type=int, default=20, help="test sequences to run (default 20)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--work", help="keep the generated sources and builds here")
    ap.add_argument("--xtensa", action="store_true", help="also run the lx106 build")
    ap.add_argument("--cores", nargs="*", metavar="CORE", default=None,
                    help="instructions/step on every emulated core (or those named: "
                         f"{', '.join([*CORES, 'xtensa-lx106'])}), both kernel paths")
    ap.add_argument("--profile", action="store_true",
                    help="with --cores: also the fast path per op kind on each core")
    a = ap.parse_args(argv)
    if a.cores is not None:
        unknown = [c for c in a.cores if c not in CORES and c != "xtensa-lx106"]
        if unknown:
            print(f"mcu_cost: unknown core {unknown[0]!r} (expected one of "
                  f"{', '.join([*CORES, 'xtensa-lx106'])})", file=sys.stderr)
            return 2
        res = cores_cost(a.model_dir, a.seqs, a.work, a.cores or None, a.profile)
        print(cores_table(res))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        return 0 if res["logits_mismatched_bytes"] == 0 else 1
    if not have("arm-none-eabi-gcc", "qemu-system-arm"):
        print("mcu_cost: arm-none-eabi-gcc and qemu-system-arm are needed (make toolchain)",
              file=sys.stderr)
        return 2
    res = cost(a.model_dir, a.seqs, a.work, a.xtensa)
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["logits_mismatched_bytes"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
