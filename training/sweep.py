"""Accuracy vs memory sweep: mGRADE and its baselines across sizes and seeds.

    python -m mgrade_edge.training.sweep SWEEP.toml --out DIR [--jobs N] [--dry-run] [--report]

SWEEP.toml:
    base = "configs/digits_mgrade.toml"      # every run starts from this config
    seeds = [0, 1]
    epochs = 20                              # optional override of train.epochs
    [train]                                  # optional overrides of other train keys
    threads = 1
    [grid]                                   # model keys, every combination
    d_model = [8, 16, 32]
    kernel_span = [8, 16]
    [families.mgrade]                        # model overrides per family
    [families.conv]
    use_rnn = false
    [families.dilated]                       # conv = "dilated": dilation from kernel_span
    use_rnn = false
    conv = "dilated"
    [families.rnn]
    use_conv = false
    [convert]                                # optional, see training/sweep_convert.py
    n_test = 1000                            # int8 accuracy on the first N test sequences
    args = []                                # more `python -m mgrade_edge.convert` arguments

Each run trains into DIR/runs/NAME (`--jobs N`: N runs at once, each a `python -m
mgrade_edge.training.train` process logging to DIR/runs/NAME/train.log; seed by seed, so an interrupted sweep
has the whole grid for its first seeds; resumable: an interrupted sweep continues where it
stopped, finished runs are skipped), is then converted to the int8 step model the board runs
(`python -m mgrade_edge.convert RUN --out RUN/int8`, log in RUN/convert.log; a rerun skips conversions
already done, a failed one is reported in the tables, not raised) and has one row in
DIR/results.jsonl: accuracies (float, hardened, and int8 on TFLite-Micro, bit-exact with the
device), parameters, state and memory footprint in bytes at int8 and fp32 (trimmed rings for
learned delays). `--report` (also run at the end) writes DIR/accuracy_vs_memory.png and
DIR/results.md: float and int8 accuracy side by side, the Pareto front per family and, for
each baseline's best accuracy, the smallest mGRADE that matches it and the memory ratio; the
fronts and the matching use the int8 accuracy (float only for a sweep with conversion off).

Training children die with the sweep (they get SIGTERM, save a checkpoint and stop when the
sweep process exits, however it exits), and a run whose folder is locked by a live trainer
(DIR/runs/NAME/train.lock) is skipped with a message instead of getting a second trainer.
"""
from __future__ import annotations

if __name__ == "__main__":        # Ctrl-C before the first run starts: one line, exit 130
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("nothing was trained", hard=True)

import argparse
import itertools
import json
import os
import sys
import textwrap
import tomllib
from pathlib import Path

from mgrade_edge.training.config import ConfigError, config_from_dict
from mgrade_edge.training.console import progress, require, say, set_quiet
from mgrade_edge.training.sweep_convert import (ROW_KEYS, convert_settings, int8_fields,
                                    needs_convert, row_is_behind, run_convert)

FAMILY_LABELS = {"mgrade": "mGRADE", "conv": "pure conv (learnable spacings)",
                 "dilated": "pure conv (dilated)", "rnn": "pure minGRU"}
FAMILY_COLORS = {"conv": "C0", "dilated": "C1", "mgrade": "C2", "rnn": "C3"}  # same in every plot


def toml_text(cfg: dict) -> str:
    """A config dict (tables of scalars) as TOML."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)
    out = []
    for table, items in cfg.items():
        out.append(f"[{table}]")
        out += [f"{k} = {value(v)}" for k, v in items.items()]
        out.append("")
    return "\n".join(out)


def expand(sweep: dict) -> list[tuple[str, str, dict]]:
    """(family, run name, full config dict) for every distinct run of the sweep."""
    base_path = Path(sweep["base"])
    if not base_path.is_file():
        raise ConfigError(f"sweep base config not found: {base_path}")
    base = tomllib.loads(base_path.read_text(encoding="utf-8"))
    grid = sweep.get("grid", {})
    keys = sorted(grid)
    runs, seen = [], set()
    for family, overrides in sweep.get("families", {"mgrade": {}}).items():
        for combo in itertools.product(*(grid[k] for k in keys)):
            for seed in sweep.get("seeds", [0]):
                model = {**base.get("model", {}), **dict(zip(keys, combo)), **overrides}
                if model.get("conv") == "dilated":
                    taps = model.get("n_taps", 4)
                    model["dilation"] = max(1, (model.get("kernel_span", 16) - 1) // max(1, taps - 1))
                if model.get("use_conv") is False:      # conv sizes are moot: collapse
                    model.pop("kernel_span", None)
                    model.pop("n_taps", None)
                train = {**base.get("train", {}), **sweep.get("train", {}), "seed": seed}
                if "epochs" in sweep:
                    train["epochs"] = sweep["epochs"]
                cfg = {"task": base["task"], "model": model, "train": train}
                config_from_dict(json.loads(json.dumps(cfg)))     # validate now, not later
                key = json.dumps(cfg, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                name = (f"{family}-H{model.get('d_model')}-L{model.get('n_layers')}"
                        + (f"-K{model.get('kernel_span')}-N{model.get('n_taps')}"
                           if model.get("use_conv", True) else "") + f"-s{seed}")
                runs.append((family, name, cfg))
    return runs


def check_task(cfg: dict):
    """Load the sweep's task once (every run shares it) before anything trains: bad data is
    one error line instead of a failed run per grid point. A test split without a labelled
    step is refused too: a sweep compares test accuracies."""
    from mgrade_edge.training.tasks import IGNORE, TaskError, load_task
    task = config_from_dict(json.loads(json.dumps(cfg))).task
    data = load_task(task.name, task.params, task.data_dir or None, task.seed)
    if not bool((data.y_test != IGNORE).any()):
        raise TaskError(f"task '{task.name}': the test split has no labelled step (all "
                        f"{IGNORE}); a sweep compares test accuracies: give test labels")


def train_run(name: str, cfg: dict, out: Path, log: bool) -> int:
    """Train (or resume) one run in its own process; returns its exit code."""
    import subprocess
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.toml"
    cfg_path.write_text(toml_text(cfg))
    cmd = [sys.executable, "-m", "mgrade_edge.training.train", str(cfg_path), "--out", str(run_dir),
           "--resume"]
    env = dict(os.environ, MGRADE_PARENT_PID=str(os.getpid()))   # dies with the sweep
    if not log:
        return subprocess.call(cmd, env=env)
    with open(run_dir / "train.log", "a") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def measure_run(family: str, name: str, out: Path) -> dict:
    """One results row of a trained run: accuracies (hardened too) and memory."""
    from mgrade_edge.training.checkpoint import load_model
    from mgrade_edge.training.evaluate import evaluate
    from mgrade_edge.training.memory import memory_report
    from mgrade_edge.training.tasks import load_task

    import torch
    torch.set_num_threads(1)
    net, config, ckpt = load_model(out / "runs" / name)
    last = ckpt["history"][-1]
    data = load_task(config.task.name, config.task.params, config.task.data_dir or None,
                     config.task.seed)
    net.harden()
    hard = evaluate(net, data.x_test, data.y_test, lengths=data.len_test)   # variable length
    mem = memory_report(net)
    total = mem["total"].get("trimmed", mem["total"]["plain"])
    return {"family": family, "name": name, "seed": config.train.seed,
            "d_model": config.model.d_model, "n_layers": config.model.n_layers,
            "kernel_span": config.model.span if config.model.use_conv else 0,
            "n_taps": config.model.n_taps if config.model.use_conv else 0,
            "epochs": last["epoch"], "train_s": train_seconds(ckpt["history"]),
            "val_acc": last["val_acc"], "test_acc": last["test_acc"],
            "hardened_test_acc": hard["acc"], "train_params": mem["train_params"],
            "param_values": total["param_values"], "state_values": total["state_values"],
            "int8_bytes": total["int8_bytes"], "fp32_bytes": total["fp32_bytes"],
            "int8_bytes_plain_ring": mem["total"]["plain"]["int8_bytes"]}


def train_seconds(history: list[dict]) -> float:
    """Training wall time of a run (s): the sum of its epochs' `epoch_s` (evaluation
    included, time between an interruption and its resume not)."""
    return round(sum(h.get("epoch_s") or 0.0 for h in history), 1)


def _read_jsonl(path: Path) -> list[dict]:
    """One JSON value per non-blank line of `path`."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_results(out: Path) -> list[dict]:
    """DIR/results.jsonl's rows; a row written before rows carried `train_s` gets it from its
    run's metrics.jsonl when that is there."""
    path = out / "results.jsonl"
    if not path.exists():
        return []
    rows = _read_jsonl(path)
    for r in rows:
        metrics = out / "runs" / r.get("name", "") / "metrics.jsonl"
        if "train_s" not in r and metrics.is_file():
            try:
                r["train_s"] = train_seconds(_read_jsonl(metrics))
            except (ValueError, AttributeError):
                pass
    return rows


def save_results(out: Path, rows: list[dict]):
    """Replace DIR/results.jsonl with `rows` (atomically: an interrupt keeps the old file)."""
    tmp = out / f"results.jsonl.tmp{os.getpid()}"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / "results.jsonl")


def _mean(vals: list) -> float | None:
    return sum(vals) / len(vals) if vals and None not in vals else None


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean over seeds of each (family, size) configuration. `acc_float` (min/max): hardened
    float test accuracy; `acc_int8` (min/max): int8 TFLite-Micro accuracy, None unless every
    seed converted; `int8_cost`: mean points lost to int8 on the converter's test sequences;
    `convert_failed`: seeds whose conversion failed."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["name"].rsplit("-s", 1)[0], []).append(r)
    out = []
    for key, rs in groups.items():
        fl = [r["hardened_test_acc"] for r in rs]
        i8 = [r.get("int8_acc") for r in rs]
        ok = None not in i8
        cost = _mean([r.get("int8_float_acc") - r["int8_acc"] for r in rs]) if ok else None
        out.append({**rs[0], "name": key, "seeds": len(rs),
                    "acc_float": _mean(fl), "acc_float_min": min(fl), "acc_float_max": max(fl),
                    "acc_int8": _mean(i8), "acc_int8_min": min(i8) if ok else None,
                    "acc_int8_max": max(i8) if ok else None,
                    "int8_cost": None if cost is None else 100 * cost,
                    "train_s": _mean([r.get("train_s") for r in rs]),
                    "int8_n_test": min(r.get("int8_n_test") or 0 for r in rs) if ok else None,
                    "convert_failed": sum(bool(r.get("convert_error")) for r in rs)})
    return out


def with_metric(agg: list[dict], metric: str) -> list[dict]:
    """Configurations with `acc` set to the metric's accuracy ("int8" or "float"); those
    without one (conversion failed or not run) are left out."""
    return [{**p, "acc": p[f"acc_{metric}"]} for p in agg if p[f"acc_{metric}"] is not None]


def report_metric(rows: list[dict]) -> str:
    """"int8" when any run has an int8 accuracy, else "float" (a sweep with conversion off)."""
    return "int8" if any(r.get("int8_acc") is not None for r in rows) else "float"


def pareto(points: list[dict]) -> list[dict]:
    """Configurations not beaten by a smaller-or-equal one with higher `acc`."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["int8_bytes"], -p["acc"])):
        if p["acc"] > best:
            front.append(p)
            best = p["acc"]
    return front


def matched_table(agg: list[dict]) -> list[dict]:
    """For each baseline family's best `acc`: the smallest mGRADE that reaches it."""
    mg = [p for p in agg if p["family"] == "mgrade"]
    rows = []
    for family in sorted({p["family"] for p in agg} - {"mgrade"}):
        base = [p for p in agg if p["family"] == family]
        if not base or not mg:
            continue
        best = max(base, key=lambda p: (p["acc"], -p["int8_bytes"]))
        # the smallest baseline that reaches its family's best accuracy
        best = min((p for p in base if p["acc"] >= best["acc"]), key=lambda p: p["int8_bytes"])
        match = [p for p in mg if p["acc"] >= best["acc"]]
        small = min(match, key=lambda p: p["int8_bytes"]) if match else None
        rows.append({"baseline": family, "baseline_config": best["name"],
                     "baseline_acc": best["acc"], "baseline_int8_bytes": best["int8_bytes"],
                     "baseline_acc_float": best.get("acc_float"),
                     "mgrade_config": small["name"] if small else None,
                     "mgrade_acc": small["acc"] if small else None,
                     "mgrade_acc_float": small.get("acc_float") if small else None,
                     "mgrade_int8_bytes": small["int8_bytes"] if small else None,
                     "memory_ratio": (small["int8_bytes"] / best["int8_bytes"]) if small else None})
    return rows


def plot_series(agg: list[dict], metric: str) -> dict:
    """What the plot draws per family: `front` and `points` as (int8 bytes, accuracy %) of the
    metric's accuracy, `float` as (int8 bytes, float accuracy %) (faint, int8 plots only)."""
    series = {}
    pts = with_metric(agg, metric)
    for family in sorted({p["family"] for p in agg}):
        mine = [p for p in pts if p["family"] == family]
        series[family] = {
            "front": [(p["int8_bytes"], 100 * p["acc"]) for p in pareto(mine)],
            "points": [(p["int8_bytes"], 100 * p["acc"]) for p in mine],
            "float": [(p["int8_bytes"], 100 * p["acc_float"]) for p in agg
                      if p["family"] == family] if metric == "int8" else []}
    return series


def zoom_range(series: dict) -> tuple[float, float] | None:
    """The accuracy range (%) of a second, zoomed panel: from just below mGRADE's lowest point
    to just above the best point, when the whole plot's range is over 3 times as tall (a
    baseline far below, e.g. a device collapse, would squash the comparison); else None."""
    acc = [a for s in series.values() for key in ("points", "float") for _, a in s[key]]
    mine = [a for _, a in series.get("mgrade", {}).get("points", [])]
    if not mine or not acc:
        return None
    top = max(a for s in series.values() for _, a in s["points"])
    span = max(top - min(mine), 0.2)
    lo = min(mine) - 0.25 * span
    if top - min(acc) <= 3 * (top - lo):
        return None
    return lo, top + 0.15 * span


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _acc_cell(p: dict, which: str) -> str:
    if which == "int8" and p["acc_int8"] is None:
        return ("convert failed" + (f" ({p['convert_failed']} of {p['seeds']} seeds)"
                                    if p["seeds"] > 1 else "")) if p["convert_failed"] \
            else "not converted"
    return (f"{_pct(p[f'acc_{which}'])} ({100 * p[f'acc_{which}_min']:.1f}-"
            f"{100 * p[f'acc_{which}_max']:.1f})")


def width_table(agg: list[dict]) -> list[str]:
    """Markdown lines: one row per (width, layers, kernel), one column per family, each cell
    "float % / int8 % (int8 B)" (means over seeds)."""
    families = sorted({p["family"] for p in agg}, key=lambda f: (f != "mgrade", f))
    cell = {}
    for p in agg:
        int8 = _pct(p["acc_int8"]) if p["acc_int8"] is not None else \
            ("convert failed" if p["convert_failed"] else "-")
        cell[(p["d_model"], p["n_layers"], p["family"])] = \
            f"{_pct(p['acc_float'])} / {int8} ({p['int8_bytes']:,})"
    lines = ["| H | L | " + " | ".join(f"{FAMILY_LABELS.get(f, f)}: float % / int8 % (int8 B)"
                                       if i == 0 else FAMILY_LABELS.get(f, f)
                                       for i, f in enumerate(families)) + " |",
             "|---|---|" + "---|" * len(families)]
    for h, L in sorted({(p["d_model"], p["n_layers"]) for p in agg}):
        lines.append(f"| {h} | {L} | " + " | ".join(cell.get((h, L, f), "-") for f in families)
                     + " |")
    return lines


def matched_lines(table: list[dict], agg: list[dict]) -> list[str]:
    """Markdown lines of a matched_table: header, then one row per baseline family."""
    lines = ["| baseline | its best (smallest at that accuracy) | float % | int8 % | int8 B | "
             "smallest mGRADE matching it | float % | int8 % | int8 B | memory ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_name = {p["name"]: p for p in agg}
    for r in table:
        b, m = by_name[r["baseline_config"]], by_name.get(r["mgrade_config"])
        ratio = f"{r['memory_ratio']:.2f}" if r["memory_ratio"] is not None else "no match"
        lines.append(f"| {FAMILY_LABELS.get(r['baseline'], r['baseline'])} | "
                     f"{r['baseline_config']} | {_pct(b['acc_float'])} | {_pct(b['acc_int8'])} | "
                     f"{r['baseline_int8_bytes']} | {r['mgrade_config'] or '-'} | "
                     + (f"{_pct(m['acc_float'])} | {_pct(m['acc_int8'])} | "
                        f"{r['mgrade_int8_bytes']}" if m else "- | - | -") + f" | {ratio} |")
    return lines


def write_report(out: Path, title: str = ""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_results(out)
    if not rows:
        print("no results yet")
        return
    agg = aggregate(rows)
    metric = report_metric(rows)
    series = plot_series(agg, metric)
    zoom = zoom_range(series)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12 if zoom else 7, 4.8),
                             squeeze=False)
    for ax in axes[0]:
        for family, s in series.items():
            color = FAMILY_COLORS.get(family)
            label = FAMILY_LABELS.get(family, family)
            if s["front"]:
                ax.plot(*zip(*s["front"]), marker="o", label=label, color=color)
                ax.scatter(*zip(*s["points"]), color=color, alpha=0.3, s=12)
            if s["float"]:
                ax.scatter(*zip(*s["float"]), color=color, alpha=0.35, s=22, marker="x",
                           linewidths=0.8)
        if metric == "int8":
            ax.scatter([], [], color="gray", alpha=0.5, marker="x", label="float (same model)")
        ax.set_xscale("log")
        ax.set(xlabel="memory footprint at int8 (bytes: weights + state)",
               ylabel=("test accuracy (%, int8 on TFLite-Micro = device, mean over seeds)"
                       if metric == "int8" else
                       "test accuracy (%, float hardened, mean over seeds)"))
        ax.yaxis.label.set_size(8)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    if zoom:
        axes[0][1].set_ylim(*zoom)
        axes[0][1].set_title("zoomed to mGRADE's accuracy range", fontsize=9)
    fig.suptitle(textwrap.fill(title or "accuracy vs memory", 100), fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_memory.png", dpi=110)
    plt.close(fig)
    table = matched_table(with_metric(agg, metric))
    n_test = sorted({p["int8_n_test"] for p in agg if p["int8_n_test"]})
    lines = [f"Matching and Pareto fronts use the **{metric}** accuracy"
             + (" (int8 step model on TFLite-Micro, bit-exact with the device, on "
                + ("/".join(map(str, n_test)) or "?") + " test sequences); float = hardened "
                "float model on the whole test set." if metric == "int8" else
                " (conversion off: no int8 figures)."), ""]
    lines += matched_lines(table, agg)
    n_matched = len(lines)
    float_table = matched_table(with_metric(agg, "float")) if metric == "int8" else []
    if float_table:
        lines += ["", "The same matching on the **float** accuracy (what each family learns, "
                  "before the converter; a baseline that loses much more to int8 than mGRADE "
                  "does is better judged here):", ""] + matched_lines(float_table, agg)
    lines += ["", "| config | family | seeds | float % (mean, min-max) | int8 % (mean, min-max) | "
              "int8 cost (points) | params | state | int8 B | fp32 B | epochs | "
              "train wall (s, mean) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(agg, key=lambda p: (p["family"], p["int8_bytes"])):
        cost = "-" if p["int8_cost"] is None else f"{p['int8_cost']:+.2f}"
        wall = "-" if p.get("train_s") is None else f"{p['train_s']:,.0f}"
        lines.append(f"| {p['name']} | {p['family']} | {p['seeds']} | {_acc_cell(p, 'float')} | "
                     f"{_acc_cell(p, 'int8')} | {cost} | {p['param_values']} | "
                     f"{p['state_values']} | {p['int8_bytes']} | {p['fp32_bytes']} | "
                     f"{p.get('epochs', '-')} | {wall} |")
    lines += [""] + width_table(agg)
    failed = [r for r in rows if r.get("convert_error")]
    if failed:
        lines += ["", "Conversions that failed (see RUN/convert.log):", ""]
        lines += [f"- {r['name']}: {r['convert_error']}" for r in failed]
    lines.append("")
    lines.append("int8 cost: hardened float minus int8 accuracy on the converter's test "
                 "sequences, mean over seeds.")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "matched.json").write_text(json.dumps({"metric": metric, "rows": table,
                                                  "float_rows": float_table}, indent=1))
    print("\n".join(lines[:n_matched]))


def sweep_job(name: str, cfg: dict, out: Path, log: bool, train: bool, convert: bool,
              settings: dict) -> tuple[int, int | None]:
    """One worker's job: train the run (if `train`), then convert it (if `convert`); one
    child process at a time. Returns (training exit code, converter exit code or None when
    it did not run)."""
    if train:
        code = train_run(name, cfg, out, log)
        if code != 0:
            return code, None
    if convert:
        return 0, run_convert(out / "runs" / name, settings)
    return 0, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mgrade_edge.training.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep TOML")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=1, help="runs trained and converted at once (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--report", action="store_true", help="only redraw the report")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final table (and errors); each run's training output "
                        "goes to RUN/train.log")
    args = p.parse_args(argv)
    set_quiet(args.quiet)
    require("torch", "numpy", "tqdm", "matplotlib", command="-m mgrade_edge.training.sweep")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    out = Path(args.out)
    try:
        sweep = tomllib.loads(Path(args.sweep).read_text(encoding="utf-8"))
        runs = expand(sweep)
        settings = convert_settings(sweep)
    except UnicodeDecodeError:
        print(f"error: {args.sweep} (or its base config) is not a text file (not UTF-8); give "
              f"a sweep TOML", file=sys.stderr)
        return 2
    except (OSError, tomllib.TOMLDecodeError, ConfigError, KeyError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.report:
        write_report(out, sweep.get("title", ""))
        return 0
    from mgrade_edge.training.runlock import holder
    rows = {r["name"]: r for r in load_results(out)}
    todo = [r for r in runs if r[1] not in rows]
    # trained runs whose conversion is missing, stale, made with other arguments, or not in
    # their row yet (a results.jsonl from before conversions, or a report converted again
    # outside the sweep: read, not reconverted)
    stale = [r for r in runs if r[1] in rows and (
        needs_convert(out / "runs" / r[1], rows[r[1]], settings)
        or row_is_behind(out / "runs" / r[1], rows[r[1]], settings)
        or (settings["enabled"] and rows[r[1]].get("convert_args") is None))]
    busy = {name: holder(out / "runs" / name) for _, name, _ in todo + stale}
    busy = {name: pid for name, pid in busy.items() if pid}
    for name, pid in busy.items():
        print(f"{name}: skipped, another trainer (pid {pid}) is writing {out / 'runs' / name}; "
              f"rerun the sweep when it has finished (or stop it: kill {pid})", file=sys.stderr)
    todo = [r for r in todo if r[1] not in busy]
    stale = [r for r in stale if r[1] not in busy]
    say(f"{len(runs)} runs, {len(runs) - len(todo)} trained, {len(todo)} to train"
          + (f", {len(stale)} to (re)convert or read" if settings["enabled"] else
             " (conversion off)"))
    if args.dry_run:
        for family, name, _ in todo:
            print(f"  {name}")
        for family, name, _ in stale:
            print(f"  {name} (convert)")
        return 0
    if todo:
        try:
            check_task(todo[0][2])
        except ValueError as e:           # TaskError, ConfigError
            print(f"error: {e}", file=sys.stderr)
            return 2
    if __name__ == "__main__":        # from here on Ctrl-C stops the runs (see below)
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
    out.mkdir(parents=True, exist_ok=True)
    order = {name: i for i, (_, name, _) in enumerate(runs)}
    extra = [r for r in rows.values() if r["name"] not in order]   # rows of an older grid
    from concurrent.futures import ThreadPoolExecutor
    failed, convert_failed = [], []
    jobs = [(family, name, cfg, True, settings["enabled"]) for family, name, cfg in todo]
    jobs += [(family, name, cfg, False, needs_convert(out / "runs" / name, rows[name], settings))
             for family, name, cfg in stale]
    seeds = {s: i for i, s in enumerate(sweep.get("seeds", [0]))}
    # seed-major: an interrupted sweep has the whole grid for its first seeds
    jobs.sort(key=lambda j: (seeds.get(j[2]["train"]["seed"], 0), order[j[1]]))
    bar = progress(total=len(jobs), unit="run", desc="sweep", leave=False)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(sweep_job, name, cfg, out, args.jobs > 1 or args.quiet, train, conv,
                               settings): (family, name, train)
                   for family, name, cfg, train, conv in jobs}
        for i, fut in enumerate(futures):          # in submission order
            family, name, train = futures[fut]
            try:
                code, conv_code = fut.result()
            except KeyboardInterrupt:
                bar.close()
                print("interrupted: finished runs are kept; rerun the same command to go on",
                      file=sys.stderr)
                pool.shutdown(wait=False, cancel_futures=True)
                return 130
            bar.update(1)
            head = f"[{i + 1}/{len(jobs)}] {name}:"
            if code != 0:
                failed.append(name)
                bar.write(f"{head} training failed (exit {code}); see "
                          f"{out / 'runs' / name / 'train.log'}", file=sys.stderr)
                continue
            row = measure_run(family, name, out) if train else \
                {k: v for k, v in rows[name].items() if k not in ROW_KEYS}
            row.update(int8_fields(out / "runs" / name, settings, conv_code))
            rows[name] = row
            save_results(out, sorted((r for r in rows.values() if r["name"] in order),
                                     key=lambda r: order[r["name"]]) + extra)
            if row["convert_error"]:
                convert_failed.append(name)
                int8 = f"int8 conversion failed ({row['convert_error']})"
            elif row["int8_acc"] is not None:
                int8 = (f"int8 {100 * row['int8_acc']:.2f}% on {row['int8_n_test']} "
                        f"test sequences")
            else:
                int8 = "not converted"
            if not args.quiet:
                bar.write(f"{head} hardened float test acc "
                          f"{100 * row['hardened_test_acc']:.2f}%, {int8}, int8 "
                          f"{row['int8_bytes']} B", file=sys.stdout)
                sys.stdout.flush()
    bar.close()
    write_report(out, sweep.get("title", ""))
    failed += sorted(busy)
    if convert_failed:
        print(f"error: {len(convert_failed)} conversion(s) failed (reported in "
              f"{out / 'results.md'}): {', '.join(convert_failed)}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} run(s) failed or skipped: {', '.join(failed)}",
              file=sys.stderr)
    return 1 if failed or convert_failed else 0


if __name__ == "__main__":
    sys.exit(main())
