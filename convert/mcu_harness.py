"""The emulated-core harness: build the model package + C runtime + a test harness
(mcu/runtime/tests/model_check.c) for a core, run it under QEMU, size it by symbol.

    b = build_check("qemu-cm4", gen_dir, out_dir, debug=False, fast=True)  # {"elf", "objs"..}
    r = run_check(b)          # MGCHECK line: instructions per step, mismatched logit bytes
    m = memory_split(b)       # RAM (state, scratch) and flash (weights, parameters, code), bytes

One home for what the resource table (convert/resources.py), benchmarks/mcu_cost.py and the
tests build: TARGETS (compiler, flags, platform sources, link script and QEMU command per
emulated core) and BOARDS (the QEMU machine of each emulated board, also host_tools/
emulator.py's). The C sources are found through the installed package (mgrade_edge.mcu,
package data: runtime/, runtime/tests/, boards/), so this works from a wheel as from a
checkout. Imports nothing of the project and nothing heavy (the host install runs it).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MCU = Path(__file__).resolve().parents[1] / "mcu"     # mgrade_edge.mcu: checkout or wheel
RUNTIME = MCU / "runtime"
HARNESS = RUNTIME / "tests"
RUNTIME_SRCS = ["mg_kernels.c", "mg_quant.c", "mg_delay.c", "mg_mingru.c", "mg_fast.c"]
PACKAGE_SRCS = ["mg_model.c", "mg_model_data.c"]
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]

BOARDS_DIR = MCU / "boards"

HARNESS_STACK = "4K"      # the harness's stack region (the firmware's is 2 KiB; see link scripts)

# The emulated boards (mcu/boards/<name>/): QEMU binary, machine and its extra arguments
# (host_tools/emulator.py runs the firmware with them).
BOARDS = {
    "qemu-cm0": ("qemu-system-arm", "microbit", ()),           # nRF51822, Cortex-M0
    "qemu-cm3": ("qemu-system-arm", "mps2-an385", ()),
    "qemu-cm4": ("qemu-system-arm", "mps2-an386", ()),
    "qemu-cm7": ("qemu-system-arm", "mps2-an500", ()),
    "qemu-cm33": ("qemu-system-arm", "mps2-an505", ()),
    "qemu-cm55": ("qemu-system-arm", "mps3-an547", ()),
    "qemu-rv32": ("qemu-system-riscv32", "virt", ("-bios", "none")),   # RV32IMC
    # Arduino sketches (mcu/boards/arduino, ATmega at 16 MHz; Serial is USART0)
    "arduino-mega": ("qemu-system-avr", "mega2560", ()),
    "arduino-uno": ("qemu-system-avr", "uno", ()),
}
# Boards whose image QEMU loads as its -bios, without semihosting and without -icount (QEMU's
# AVR target aborts with "Bad icount read" when the sketch reads a timer; their cost is
# counted in simavr: benchmarks/avr_cost.py).
BIOS_BOARDS = ("arduino-mega", "arduino-uno")


# The emulated cores: harness target = firmware board (mcu/boards/<name>/: its board.mk's
# CPU_FLAGS, its memory map; BOARDS: its QEMU machine).
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
    """Whether every one of `tools` is on PATH."""
    return all(shutil.which(t) for t in tools)


def run_tool(cmd, **kw):
    """Run a build tool (args of any type, str() each); RuntimeError with its output tail if it
    fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                           f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def harness_sources(target: str, gen_dir) -> dict[str, list[Path]]:
    """The C sources build_check compiles for `target`, by group: "runtime" (mcu/runtime),
    "package" (the generated package in gen_dir), "harness" (model_check.c, its libc and the
    target's platform/startup files, with gen_dir's test vectors mg_tv.c)."""
    gen_dir = Path(gen_dir)
    return {
        "runtime": [RUNTIME / s for s in RUNTIME_SRCS],
        "package": [gen_dir / s for s in PACKAGE_SRCS],
        "harness": [HARNESS / "model_check.c", HARNESS / "mg_test_libc.c", gen_dir / "mg_tv.c",
                    *TARGETS[target]["platform"]],
    }


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
    groups = harness_sources(target, gen_dir)
    objs = {group: [out_dir / f"{group}_{Path(src).stem}.o" for src in srcs]
            for group, srcs in groups.items()}
    jobs = [(src, o) for group in groups for src, o in zip(groups[group], objs[group])]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:   # compile in parallel
        list(pool.map(lambda so: run_tool([t["cc"], *flags, "-c", so[0], "-o", so[1]]), jobs))
    elf = out_dir / f"check_{target}{'_debug' if debug else ''}{tag}.elf"
    run_tool([t["cc"], *flags, *[o for g in objs.values() for o in g], *t["ldflags"], "-lgcc",
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


def nm_sizes(nm: str, path) -> dict[str, tuple[int, str]]:
    """{symbol: (size in bytes, nm type letter)} of an object or ELF."""
    out = run_tool([nm, "--size-sort", "-S", path]).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = (int(parts[1], 16), parts[2])
    return syms


def _defined(nm: str, objs) -> set[str]:
    """The symbols the objects define."""
    names = set()
    for o in objs:
        for line in run_tool([nm, o]).stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] not in "Uu":
                names.add(parts[2])
    return names


def header_defines(path) -> dict[str, int]:
    """#define NAME <integer>[u] lines of a generated header."""
    out = {}
    for m in re.finditer(r"^#define (\w+) (-?\d+)u?\b", Path(path).read_text(), re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def memory_split(build: dict) -> dict:
    """RAM/flash of the package + runtime in a linked build, by symbol."""
    t = TARGETS[build["target"]]
    syms = nm_sizes(t["nm"], build["elf"])
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
    size_out = run_tool([t["size"], *build["objs"]["runtime"], *build["objs"]["package"]]).stdout
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
    defs = header_defines(Path(build["gen_dir"]) / "mg_model_data.h")
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
