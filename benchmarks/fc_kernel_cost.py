"""Fast kernels (mcu/runtime/mg_fast.h) vs the reference kernels: random cases, byte-exact
check and the FC micro-benchmark on QEMU Cortex-M4 (and the lx106 / host builds).

    python -m benchmarks.fc_kernel_cost [--target qemu-cm4|xtensa-lx106|host] [--cases 40]

Writes random FULLY_CONNECTED cases (shapes 1..160 x 1..160 including depths and widths that
are not multiples of 4, per-channel and per-tensor multipliers with right, zero and left
shifts), ADD/SUB/MUL element cases from random TFLM-style scales, and the LOGISTIC/RELU
tables, builds mcu/runtime/tests/fast_check.c with the runtime and runs it. The benchmark
cases (64x64, 128x128, 256x256, 32x32) report emulated instructions per MAC of the dot
products alone (the inner loop), of the whole fast FC (input expansion + requantization) and
of the reference FC, one call each.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import mcu_cost as mc
from mgrade_edge.convert.tflm_params import quantize_multiplier, quantize_multiplier_smaller_than_one_exp
from mgrade_edge.convert.codegen_fast import ffc_layout, chan_rows, logistic_table, requant_table, \
    right_shifts

BENCH_SHAPES = [(64, 64), (128, 128), (256, 256), (32, 32)]


def _carr(v) -> str:
    return ", ".join(str(int(x)) for x in np.asarray(v).reshape(-1)) or "0"


def _fc_case(rng, k: int, depth: int, n_out: int, bench: int = 0) -> dict:
    per_channel = bench > 0 or rng.random() < 0.8
    w = rng.integers(-127, 128, size=(n_out, depth)).astype(np.int8)
    bias = rng.integers(-20000, 20000, size=n_out).astype(np.int32)
    x = rng.integers(-128, 128, size=depth).astype(np.int8)
    in_scale = rng.uniform(0.005, 0.1)
    out_scale = rng.uniform(0.05, 2.0) * math.sqrt(depth) * in_scale * 0.01
    if rng.random() < 0.15:                 # multiplier > 1: left shifts
        out_scale *= 1e-3
    ws = rng.uniform(0.002, 0.02, size=n_out if per_channel else 1)
    mults = [quantize_multiplier(in_scale * s / out_scale) for s in ws]
    zp = int(rng.integers(-20, 20))
    act_min = -128 if rng.random() < 0.7 else zp
    p = dict(batches=1, accum_depth=depth, output_depth=n_out,
             input_offset=-int(rng.integers(-30, 30)), filter_offset=0, output_offset=zp,
             act_min=act_min, act_max=127, per_channel=int(per_channel),
             multiplier=[m for m, _ in mults], shift=[s for _, s in mults])
    layout, why = ffc_layout(w, bias, p)
    if layout is None:
        raise RuntimeError(f"case {k}: {why}")
    words, rows, blocks = layout[:3]
    n = len(p["multiplier"])
    lines = [
        f"static const int8_t fc{k}_w[{w.size}] = {{{_carr(w)}}};",
        f"static const int32_t fc{k}_b[{n_out}] = {{{_carr(bias)}}};",
        f"static const int8_t fc{k}_x[{depth}] = {{{_carr(x)}}};",
        f"static const int32_t fc{k}_m[{n}] = {{{_carr(p['multiplier'])}}};",
        f"static const int32_t fc{k}_s[{n}] = {{{_carr(p['shift'])}}};",
        f"static const uint32_t fc{k}_fw[{len(words)}] = {{{_carr(words)}}};",
        f"static const mg_fq_chan_t fc{k}_ch[{n_out}] = {{{chan_rows(rows)}}};",
    ]
    init = (f"{{{{1, {depth}, {n_out}, {p['input_offset']}, 0, {zp}, {act_min}, 127, "
            f"{int(per_channel)}, fc{k}_m, fc{k}_s}}, fc{k}_w, fc{k}_b, "
            f"{{{depth}, {blocks}, {n_out}, fc{k}_fw, fc{k}_ch, {zp}, {act_min}, 127, "
            f"{right_shifts(rows)}}}, fc{k}_x, {bench}}}")
    return {"lines": lines, "init": init, "out": n_out, "xq": 2 * blocks,
            "acc": 4 * ((n_out + 3) // 4)}


def _add_params(rng, sub: bool) -> dict:
    s1, s2, so = rng.uniform(0.01, 0.2, size=3)
    twice = 2 * max(s1, s2)
    m1, sh1 = quantize_multiplier_smaller_than_one_exp(s1 / twice)
    m2, sh2 = quantize_multiplier_smaller_than_one_exp(s2 / twice)
    mo, sho = quantize_multiplier_smaller_than_one_exp(twice / ((1 << 20) * so))
    z = rng.integers(-128, 128, size=3)
    return dict(left_shift=20, input1_offset=-int(z[0]), input1_multiplier=m1,
                input1_shift=sh1, input2_offset=-int(z[1]), input2_multiplier=m2,
                input2_shift=sh2, output_offset=int(z[2]), output_multiplier=mo,
                output_shift=sho, act_min=-128, act_max=127)


def write_cases(out_dir, n_fc: int = 40, n_el: int = 30, seed: int = 0) -> Path:
    """fast_cases.{h,c} in out_dir: random cases + the benchmark shapes."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fcs = []
    for k in range(n_fc):
        d = int(rng.integers(1, 161))
        n = int(rng.integers(1, 161))
        fcs.append(_fc_case(rng, k, d, n))
    for j, (d, n) in enumerate(BENCH_SHAPES):
        fcs.append(_fc_case(rng, n_fc + j, d, n, bench=j + 1))
    c = ['#include "fast_cases.h"', ""]
    for f in fcs:
        c += f["lines"]
    c.append(f"const fc_case_t fc_cases[{len(fcs)}] = {{\n    "
             + ",\n    ".join(f["init"] for f in fcs) + "\n};")
    els = []
    for k in range(n_el):
        kind = k % 3
        n = 256
        a = rng.integers(-128, 128, size=n)
        b = rng.integers(-128, 128, size=n)
        c += [f"static const int8_t el{k}_a[{n}] = {{{_carr(a)}}};",
              f"static const int8_t el{k}_b[{n}] = {{{_carr(b)}}};"]
        bc = "{0, 0, {0}, {0}, {0}}"
        if kind < 2:
            p = _add_params(rng, kind == 1)
            keys = ["left_shift", "input1_offset", "input1_multiplier", "input1_shift",
                    "input2_offset", "input2_multiplier", "input2_shift", "output_offset",
                    "output_multiplier", "output_shift", "act_min", "act_max"]
            add = "{" + ", ".join(str(p[x]) for x in keys) + f", {bc}}}"
            mul = f"{{0, 0, 0, 0, 0, 0, 0, {bc}}}"
        else:
            s1, s2, so = rng.uniform(0.01, 0.2, size=3)
            m, sh = quantize_multiplier(s1 * s2 / so)
            z = rng.integers(-128, 128, size=3)
            mul = f"{{{-z[0]}, {-z[1]}, {z[2]}, {m}, {sh}, -128, 127, {bc}}}"
            add = f"{{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {bc}}}"
        els.append(f"{{{kind}, {add}, {mul}, {n}, el{k}_a, el{k}_b}}")
    c.append(f"const el_case_t el_cases[{len(els)}] = {{\n    " + ",\n    ".join(els) + "\n};")
    luts = []
    for k in range(12):
        if k % 2 == 0:
            scale = float(rng.uniform(0.01, 0.3))
            real = scale * float(1 << 27)
            q, ls = math.frexp(real)
            mult = int(round(q * (1 << 31)))
            if mult >= (1 << 31):
                mult -= 1 << 32
            radius = math.floor(15.0 * (1 << 27) / (2.0 ** ls))
            p = dict(size=1, input_zero_point=int(rng.integers(-128, 128)),
                     input_range_radius=radius, input_multiplier=mult, input_left_shift=ls)
            tab = logistic_table(p)
            init = (f"{{0, {{1, {p['input_zero_point']}, {radius}, {mult}, {ls}}}, "
                    f"{{0, 0, 0, 0, 0, 0, 0}}, lut{k}}}")
        else:
            m, s = quantize_multiplier(float(rng.uniform(0.2, 3.0)))
            zi, zo = (int(v) for v in rng.integers(-128, 128, size=2))
            p = dict(size=1, input_offset=zi, output_offset=zo, multiplier=m, shift=s,
                     act_min=max(-128, zo), act_max=127)
            tab = requant_table(p)
            init = (f"{{1, {{0, 0, 0, 0, 0}}, {{1, {zi}, {zo}, {m}, {s}, {max(-128, zo)}, "
                    f"127}}, lut{k}}}")
        c.append(f"static const int8_t lut{k}[256] = {{{_carr(tab)}}};")
        luts.append(init)
    c.append(f"const lut_case_t lut_cases[{len(luts)}] = {{\n    " + ",\n    ".join(luts)
             + "\n};")
    (out / "fast_cases.c").write_text("\n".join(c) + "\n")
    h = ["#ifndef FAST_CASES_H", "#define FAST_CASES_H", '#include "mg_fast.h"',
         "typedef struct { mg_fc_params_t ref; const int8_t *w; const int32_t *bias; "
         "mg_ffc_params_t fast; const int8_t *x; int32_t bench; } fc_case_t;",
         "typedef struct { int32_t kind; mg_add_params_t add; mg_mul_params_t mul; int32_t n; "
         "const int8_t *a; const int8_t *b; } el_case_t;",
         "typedef struct { int32_t kind; mg_logistic_params_t logistic; mg_requant_params_t "
         "requant; const int8_t *table; } lut_case_t;",
         f"#define FC_NUM_CASES {len(fcs)}", f"#define EL_NUM_CASES {len(els)}",
         f"#define LUT_NUM_CASES {len(luts)}",
         f"#define FC_MAX_OUT {max(f['out'] for f in fcs)}",
         f"#define FC_MAX_XQ {max(f['xq'] for f in fcs)}",
         f"#define FC_MAX_ACC {max(f['acc'] for f in fcs)}",
         "extern const fc_case_t fc_cases[FC_NUM_CASES];",
         "extern const el_case_t el_cases[EL_NUM_CASES];",
         "extern const lut_case_t lut_cases[LUT_NUM_CASES];", "#endif", ""]
    (out / "fast_cases.h").write_text("\n".join(h))
    return out


def build_and_run(target: str, case_dir, out_dir, fast_emulated: bool = False,
                  defines=()) -> dict:
    """Build fast_check.c for target (host: gcc + stdio) and run it; parsed summary.
    defines: extra -D options (e.g. MG_MUL64_CALL=1: the no-64-bit-multiply forms)."""
    case_dir, out_dir = Path(case_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    srcs = [mc.HARNESS / "fast_check.c", case_dir / "fast_cases.c"] + \
        [mc.RUNTIME / s for s in mc.RUNTIME_SRCS]
    inc = ["-I", str(mc.RUNTIME), "-I", str(mc.HARNESS), "-I", str(case_dir)]
    emu = (["-DMG_DSP_EMULATE"] if fast_emulated else []) + [f"-D{d}" for d in defines]
    if target == "host":
        exe = out_dir / "fast_check_host"
        mc.run_tool(["gcc", *mc.WARN, "-O2", "-DMG_HOST", *emu, *inc, *srcs, "-o", exe])
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        text = r.stdout
    else:
        t = mc.TARGETS[target]
        elf = out_dir / f"fast_check_{target}.elf"
        mc.run_tool([t["cc"], *mc.WARN, *t["flags"], *emu, *inc, *srcs,
                     mc.HARNESS / "mg_test_libc.c", *t["platform"], *t["ldflags"], "-lgcc",
                     "-o", elf])
        r = subprocess.run([*t["qemu"], "-display", "none", "-monitor", "none", "-serial",
                            "none", "-semihosting", "-icount", "shift=0", "-kernel", str(elf)],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        text = r.stdout + r.stderr
    m = re.search(r"MGFAST (.*)", text)
    if not m:
        raise RuntimeError(f"no MGFAST line ({r.returncode}):\n{text[-2000:]}")
    res: dict = {"exit_code": r.returncode, "bench": []}
    for kv in m.group(1).split():
        k, v = kv.split("=")
        if k == "bench_id":
            res["bench"].append({})
        elif k.startswith("bench_"):
            res["bench"][-1][k[6:]] = int(v)
        else:
            res[k] = int(v)
    if res.get("calib_ticks"):
        ipt = res["calib_instr"] / res["calib_ticks"]
        for b in res["bench"]:
            for k in ("dot", "fast", "ref"):
                b[f"{k}_instr_per_mac"] = b[k] * ipt / b["macs"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fc_kernel_cost",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="qemu-cm4", choices=["qemu-cm4", "xtensa-lx106", "host"])
    ap.add_argument("--cases", type=int, default=40, help="random FC cases (default 40)")
    ap.add_argument("--work", default="build/fc_kernel_cost")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.target != "host" and not mc.have(mc.TARGETS[a.target]["cc"],
                                          mc.TARGETS[a.target]["qemu"][0]):
        print(f"fc_kernel_cost: {mc.TARGETS[a.target]['cc']} and QEMU are needed",
              file=sys.stderr)
        return 2
    d = write_cases(Path(a.work) / "cases", a.cases)
    res = build_and_run(a.target, d, Path(a.work) / a.target)
    print(f"{a.target}: {res['fc_cases']} FC cases {res['fc_bad']} bad bytes, "
          f"{res['el_cases']} ADD/SUB/MUL cases {res['el_bad']} bad, {res['lut_cases']} tables "
          f"{res['lut_bad']} bad")
    for (dpt, n), b in zip(BENCH_SHAPES, res["bench"]):
        if "dot_instr_per_mac" in b:
            print(f"FC {n}x{dpt}: dot products {b['dot_instr_per_mac']:.2f} instr/MAC, whole "
                  f"fast FC {b['fast_instr_per_mac']:.2f}, reference "
                  f"{b['ref_instr_per_mac']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["fc_bad"] == res["el_bad"] == res["lut_bad"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
