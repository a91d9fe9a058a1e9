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
build (tests/test_mcu_model.py) compares every state too. The build/run helpers here are
shared with that test.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
HARNESS = RUNTIME / "tests"
RUNTIME_SRCS = ["mg_kernels.c", "mg_quant.c", "mg_delay.c", "mg_mingru.c", "mg_fast.c"]
PACKAGE_SRCS = ["mg_model.c", "mg_model_data.c"]
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]

BOARDS_DIR = ROOT / "mcu" / "boards"
HARNESS_STACK = "4K"      # the harness's stack region (the firmware's is 2 KiB; see link scripts)

# The emulated cores: harness target = firmware board (mcu/boards/<name>/: its board.mk's
# CPU_FLAGS, its memory map; host_tools/emulator.py BOARDS: its QEMU machine).
CORES = {
    "qemu-cm0": "Cortex-M0", "qemu-cm3": "Cortex-M3", "qemu-cm4": "Cortex-M4F",
    "qemu-cm7": "Cortex-M7", "qemu-cm33": "Cortex-M33", "qemu-cm55": "Cortex-M55",
    "qemu-rv32": "RV32IMC",
}
# Cores with the Arm DSP extension (SMLAD & co.: the fast path's native form).
DSP_CORES = ("qemu-cm4", "qemu-cm7", "qemu-cm33", "qemu-cm55")


def board_cpu_flags(board: str) -> list[str]:
    """The `CPU_FLAGS := ...` line of mcu/boards/<board>/board.mk (one source for both the
    firmware and the harness)."""
    m = re.search(r"^CPU_FLAGS\s*:=\s*(.+)$", (BOARDS_DIR / board / "board.mk").read_text(), re.M)
    if not m:
        raise RuntimeError(f"no CPU_FLAGS := line in mcu/boards/{board}/board.mk")
    return m.group(1).split()


ARM_CPU = board_cpu_flags("qemu-cm4")


def _core_target(board: str, machine_board: str | None = None) -> dict:
    """board's CPU flags; the memory map and QEMU machine of machine_board (default: board)."""
    from mgrade_edge.host_tools.emulator import BOARDS

    machine_board = machine_board or board
    qemu, machine, qemu_args = BOARDS[machine_board]
    cpu = board_cpu_flags(board)
    common = ["-nostdlib", "-nostartfiles", "-L", str(BOARDS_DIR / machine_board),
              "-Wl,--gc-sections",
              f"-Wl,--defsym=STACK_SIZE={int(HARNESS_STACK[:-1]) * 1024}"]
    if board == "qemu-rv32":
        t = {"cc": "riscv64-unknown-elf-gcc", "size": "riscv64-unknown-elf-size",
             "nm": "riscv64-unknown-elf-nm",
             "platform": [BOARDS_DIR / board / "startup.S", HARNESS / "rv32" / "platform.c"],
             "ldflags": [*common, "-T", str(BOARDS_DIR / board / "link.ld")],
             "compiler": "riscv64-unknown-elf-gcc"}
    else:
        t = {"cc": "arm-none-eabi-gcc", "size": "arm-none-eabi-size", "nm": "arm-none-eabi-nm",
             "platform": [HARNESS / "qemu" / "platform.c"],
             "ldflags": [*common, "-T", str(BOARDS_DIR / "qemu-shared" / "sections.ld")],
             "compiler": "arm-none-eabi-gcc"}
    libc = ["--specs=picolibc.specs"] if board == "qemu-rv32" else []   # its headers
    t.update(flags=["-O2", *cpu, *libc, "-ffunction-sections", "-fdata-sections"],
             qemu=[qemu, "-M", machine, *qemu_args], core=CORES[board], dsp=board in DSP_CORES,
             label=f"QEMU {machine} ({CORES[board]}), {t.pop('compiler')} -O2")
    return t


TARGETS = {
    "host": {"cc": "gcc", "flags": ["-O2"]},
    **{board: _core_target(board) for board in CORES},
    # Cortex-M0 code (-mcpu=cortex-m0) on the an385's 4 MiB: for models whose harness (with
    # its test vectors) exceeds the micro:bit's 256 KiB flash / 16 KiB RAM; the M3 executes
    # the same Thumb instructions, so the instruction count is the M0 build's
    "qemu-cm0-an385": _core_target("qemu-cm0", "qemu-cm3"),
    "xtensa-lx106": {
        "cc": "xtensa-lx106-elf-gcc", "size": "xtensa-lx106-elf-size",
        "nm": "xtensa-lx106-elf-nm",
        "flags": ["-O2", "-ffreestanding", "-mtext-section-literals", "-ffunction-sections",
                  "-fdata-sections"],
        "platform": [HARNESS / "xtensa" / "crt0.S", HARNESS / "xtensa" / "platform.c",
                     HARNESS / "xtensa" / "libgcc_extra.c"],
        "ldflags": ["-nostdlib", "-nostartfiles", "-T", str(HARNESS / "xtensa" / "link.ld"),
                    "-Wl,--gc-sections"],
        "qemu": ["qemu-system-xtensa", "-M", "sim", "-cpu", "lx106"],
        "label": "QEMU xtensa sim (lx106), xtensa-lx106-elf-gcc -O2",
        "core": "Xtensa lx106", "dsp": False,
    },
}


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                           f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


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
    _run(["gcc", *WARN, "-pedantic", "-O2", "-DMG_MODEL_DEBUG", f"-DMG_FAST={int(fast)}",
          "-I", RUNTIME, "-I", gen_dir, *srcs, "-o", exe])
    return Path(exe)


def run_host_runner(exe, x: np.ndarray) -> np.ndarray:
    """Per-step logits+states [S, T, n_out + states] from the host runner."""
    S, T, _ = x.shape
    inp = np.array([S, T], np.uint32).tobytes() + x.astype(np.int8).tobytes()
    out = subprocess.run([str(exe)], input=inp, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.int8).reshape(S, T, -1)


def build_check(target: str, gen_dir, out_dir, debug: bool = True, fast: bool | None = None,
                profile: bool = False, defines: tuple = ()) -> dict:
    """Cross-build model_check.c (+ test vectors) for `target`; objects kept for sizing.
    fast: None = the target's default path (MG_FAST 1 where the DSP extension exists), True /
    False force the fast / portable reference path; profile: per-op-kind tick counters;
    defines: extra NAME=VALUE macros (e.g. MG_FDOT16_W16=0)."""
    t = TARGETS[target]
    gen_dir, out_dir = Path(gen_dir), Path(out_dir)
    tag = ("" if fast is None else "_fast" if fast else "_ref") + ("_prof" if profile else "") \
        + "".join("_" + d.replace("=", "") for d in defines)
    out_dir = out_dir / (tag.strip("_") or "default")
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = [*WARN, *t["flags"], "-I", str(RUNTIME), "-I", str(HARNESS), "-I", str(gen_dir)]
    if debug:
        flags.append("-DMG_MODEL_DEBUG")
    if fast is not None:
        flags.append(f"-DMG_FAST={int(fast)}")
    if profile:
        flags.append("-DMG_PROFILE")
    flags += [f"-D{d}" for d in defines]
    groups = {
        "runtime": [RUNTIME / s for s in RUNTIME_SRCS],
        "package": [gen_dir / s for s in PACKAGE_SRCS],
        "harness": [HARNESS / "model_check.c", HARNESS / "mg_test_libc.c", gen_dir / "mg_tv.c",
                    *t["platform"]],
    }
    objs = {group: [out_dir / f"{group}_{Path(src).stem}.o" for src in srcs]
            for group, srcs in groups.items()}
    jobs = [(src, o) for group in groups for src, o in zip(groups[group], objs[group])]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:   # compile in parallel
        list(pool.map(lambda so: _run([t["cc"], *flags, "-c", so[0], "-o", so[1]]), jobs))
    elf = out_dir / f"check_{target}{'_debug' if debug else ''}{tag}.elf"
    _run([t["cc"], *flags, *[o for g in objs.values() for o in g], *t["ldflags"], "-lgcc",
          "-o", elf])
    return {"elf": elf, "objs": objs, "target": target, "debug": debug, "fast": fast,
            "gen_dir": gen_dir}


_LINE = re.compile(r"MGCHECK id=(\S+) (.*)")


def run_check(build: dict, timeout: float = 120) -> dict:
    """Run the harness under QEMU (-icount shift=0, semihosting); parse its summary line."""
    t = TARGETS[build["target"]]
    cmd = [*t["qemu"], "-display", "none", "-monitor", "none", "-serial", "none",
           "-semihosting", "-icount", "shift=0", "-kernel", str(build["elf"])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    m = _LINE.search(r.stdout + r.stderr)
    if not m:
        raise RuntimeError(f"no MGCHECK line (exit {r.returncode}):\n{r.stdout[-2000:]}\n"
                           f"{r.stderr[-2000:]}")
    res = {"model_id": m.group(1), "exit_code": r.returncode}
    for kv in m.group(2).split():
        k, v = kv.split("=")
        res[k] = int(v)
    ipt = res["calib_instr"] / res["calib_ticks"]       # instructions per tick (40 on cm4)
    steps = res["steps"]
    res["instructions_per_tick"] = ipt
    res["instructions_per_step"] = {"mean": res["ticks_total"] * ipt / steps,
                                    "min": res["ticks_min"] * ipt, "max": res["ticks_max"] * ipt}
    if "prof_fc" in res:
        res["profile_per_step"] = {k: res[f"prof_{k}"] * ipt / steps for k in PROFILE_KINDS}
    return res


PROFILE_KINDS = ("delay", "fc", "mingru", "elem", "readout")
PROFILE_LABELS = {"delay": "delay gather + taps", "fc": "FC (encoder, MLP)",
                  "mingru": "minGRU (FCs + gates)", "elem": "elementwise (residual, norm)",
                  "readout": "readout FC"}


def _nm_sizes(nm: str, path) -> dict[str, tuple[int, str]]:
    out = _run([nm, "--size-sort", "-S", path]).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = (int(parts[1], 16), parts[2])
    return syms


def _defined(nm: str, objs) -> set[str]:
    names = set()
    for o in objs:
        for line in _run([nm, o]).stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] not in "Uu":
                names.add(parts[2])
    return names


def _header_defines(path) -> dict[str, int]:
    """#define NAME <integer>[u] lines of a generated header."""
    out = {}
    for m in re.finditer(r"^#define (\w+) (-?\d+)u?\b", Path(path).read_text(), re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def memory_split(build: dict) -> dict:
    """RAM/flash of the package + runtime in a linked build, by symbol."""
    t = TARGETS[build["target"]]
    syms = _nm_sizes(t["nm"], build["elf"])
    ours = _defined(t["nm"], build["objs"]["runtime"] + build["objs"]["package"])
    cat = {"state_rings": 0, "state_h": 0, "state_counter": 0, "scratch_arena": 0,
           "debug_copies": 0, "constants_weights": 0, "constants_params": 0, "code": 0,
           "other_ram": 0}
    detail = {}
    for name, (size, typ) in syms.items():
        if name not in ours:
            continue
        lt = typ.lower()
        if lt == "t" and not re.match(r"mg_(t\d+|op\d+|l\d+_|info)", name):
            key = "code"
        elif name == "mg_arena_words":
            key = "scratch_arena"
        elif name.startswith("mg_dbg_"):
            key = "debug_copies"
        elif re.fullmatch(r"mg_t\d+|mg_l\d+_\w+_f_w|mg_op\d+f_w", name):
            key = "constants_weights"
        elif lt in ("r", "t"):
            key = "constants_params"
        else:
            key = "other_ram"
        cat[key] += size
        detail[name] = size
    size_out = _run([t["size"], *build["objs"]["runtime"], *build["objs"]["package"]]).stdout
    tot = {"text": 0, "data": 0, "bss": 0}
    for line in size_out.splitlines()[1:]:
        p = line.split()
        tot["text"] += int(p[0])
        tot["data"] += int(p[1])
        tot["bss"] += int(p[2])
    # the stream's state: the harness's mg_model_t instance (model_check.c), split by the
    # package's header (rings, minGRU states at their width; an int16 state's int8 copy h<l>,
    # rewritten every step, counts as other RAM; the rest is the step counter + padding)
    inst = syms.get("mg_check_model", (0, ""))[0]
    defs = _header_defines(Path(build["gen_dir"]) / "mg_model_data.h")
    copies = defs.get("MG_MODEL_H8_COPY_BYTES", 0)
    cat["other_ram"] += copies
    state = inst - copies
    cat["state_rings"] = defs.get("MG_MODEL_RING_BYTES", 0)
    cat["state_h"] = defs.get("MG_MODEL_H_BYTES", 0)
    cat["state_counter"] = state - cat["state_rings"] - cat["state_h"]
    detail["mg_check_model"] = state
    return {
        "ram": {"state_rings": cat["state_rings"], "state_h": cat["state_h"],
                "state_counter": cat["state_counter"], "state_total": state,
                "scratch_arena": cat["scratch_arena"], "other": cat["other_ram"],
                "total": state + cat["scratch_arena"] + cat["other_ram"]},
        "flash": {"constants_weights": cat["constants_weights"],
                  "constants_params": cat["constants_params"],
                  "code": cat["code"], "data_init": 0,   # the instance is .bss (mg_model_init)
                  "total": cat["constants_weights"] + cat["constants_params"] + cat["code"]},
        "objects_size": tot,
        "symbols": dict(sorted(detail.items(), key=lambda kv: -kv[1])),
    }


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
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "firmware", f"BOARD={board}",
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
