"""Accuracy vs memory sweep: mGRADE and its baselines across sizes and seeds.

    python -m training.sweep SWEEP.toml --out DIR [--jobs N] [--dry-run] [--report]

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

Each run trains into DIR/runs/NAME (`--jobs N`: N runs at once, each a `python -m
training.train` process logging to DIR/runs/NAME/train.log; resumable: an interrupted sweep continues where it
stopped, finished runs are skipped) and appends one row to DIR/results.jsonl: accuracies (float
and hardened), parameters, state and memory footprint in bytes at int8 and fp32 (trimmed rings
for learned delays). `--report` (also run at the end) writes DIR/accuracy_vs_memory.png and
DIR/results.md: the Pareto front per family and, for each baseline's best accuracy, the
smallest mGRADE that matches it and the memory ratio.

Training children die with the sweep (they get SIGTERM, save a checkpoint and stop when the
sweep process exits, however it exits), and a run whose folder is locked by a live trainer
(DIR/runs/NAME/train.lock) is skipped with a message instead of getting a second trainer.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tomllib
from pathlib import Path

from training.config import ConfigError, config_from_dict

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


def train_run(name: str, cfg: dict, out: Path, log: bool) -> int:
    """Train (or resume) one run in its own process; returns its exit code."""
    import subprocess
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.toml"
    cfg_path.write_text(toml_text(cfg))
    cmd = [sys.executable, "-m", "training.train", str(cfg_path), "--out", str(run_dir),
           "--resume"]
    env = dict(os.environ, MGRADE_PARENT_PID=str(os.getpid()))   # dies with the sweep
    if not log:
        return subprocess.call(cmd, env=env)
    with open(run_dir / "train.log", "a") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def measure_run(family: str, name: str, out: Path) -> dict:
    """One results row of a trained run: accuracies (hardened too) and memory."""
    from training.checkpoint import load_model
    from training.evaluate import evaluate
    from training.memory import memory_report
    from training.tasks import load_task

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
            "epochs": last["epoch"], "val_acc": last["val_acc"], "test_acc": last["test_acc"],
            "hardened_test_acc": hard["acc"], "train_params": mem["train_params"],
            "param_values": total["param_values"], "state_values": total["state_values"],
            "int8_bytes": total["int8_bytes"], "fp32_bytes": total["fp32_bytes"],
            "int8_bytes_plain_ring": mem["total"]["plain"]["int8_bytes"]}


def load_results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean over seeds of each (family, size) configuration."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["name"].rsplit("-s", 1)[0], []).append(r)
    out = []
    for key, rs in groups.items():
        acc = sum(r["hardened_test_acc"] for r in rs) / len(rs)
        out.append({**rs[0], "name": key, "acc": acc, "seeds": len(rs),
                    "acc_min": min(r["hardened_test_acc"] for r in rs),
                    "acc_max": max(r["hardened_test_acc"] for r in rs)})
    return out


def pareto(points: list[dict]) -> list[dict]:
    """Configurations not beaten by a smaller-or-equal one with higher accuracy."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["int8_bytes"], -p["acc"])):
        if p["acc"] > best:
            front.append(p)
            best = p["acc"]
    return front


def matched_table(agg: list[dict]) -> list[dict]:
    """For each baseline family's best accuracy: the smallest mGRADE that reaches it."""
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
                     "mgrade_config": small["name"] if small else None,
                     "mgrade_acc": small["acc"] if small else None,
                     "mgrade_int8_bytes": small["int8_bytes"] if small else None,
                     "memory_ratio": (small["int8_bytes"] / best["int8_bytes"]) if small else None})
    return rows


def write_report(out: Path, title: str = ""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_results(out)
    if not rows:
        print("no results yet")
        return
    agg = aggregate(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in sorted({p["family"] for p in agg}):
        pts = [p for p in agg if p["family"] == family]
        label = FAMILY_LABELS.get(family, family)
        line = ax.plot([p["int8_bytes"] for p in pareto(pts)],
                       [100 * p["acc"] for p in pareto(pts)], marker="o", label=label,
                       color=FAMILY_COLORS.get(family))[0]
        ax.scatter([p["int8_bytes"] for p in pts], [100 * p["acc"] for p in pts],
                   color=line.get_color(), alpha=0.3, s=12)
    ax.set_xscale("log")
    ax.set(xlabel="memory footprint at int8 (bytes: weights + state)",
           ylabel="test accuracy (%, hardened, mean over seeds)",
           title=title or "accuracy vs memory")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_memory.png", dpi=110)
    plt.close(fig)
    table = matched_table(agg)
    lines = ["| baseline | its best (smallest at that accuracy) | acc | int8 B | smallest mGRADE "
             "matching it | acc | int8 B | memory ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        ratio = f"{r['memory_ratio']:.2f}" if r["memory_ratio"] is not None else "no match"
        lines.append(f"| {FAMILY_LABELS.get(r['baseline'], r['baseline'])} | "
                     f"{r['baseline_config']} | {100 * r['baseline_acc']:.2f} | "
                     f"{r['baseline_int8_bytes']} | {r['mgrade_config'] or '-'} | "
                     + (f"{100 * r['mgrade_acc']:.2f} | {r['mgrade_int8_bytes']}"
                        if r["mgrade_config"] else "- | -") + f" | {ratio} |")
    lines += ["", "| config | family | seeds | acc (mean, min-max) | params | state | int8 B | "
              "fp32 B |", "|---|---|---|---|---|---|---|---|"]
    for p in sorted(agg, key=lambda p: (p["family"], p["int8_bytes"])):
        lines.append(f"| {p['name']} | {p['family']} | {p['seeds']} | {100 * p['acc']:.2f} "
                     f"({100 * p['acc_min']:.1f}-{100 * p['acc_max']:.1f}) | "
                     f"{p['param_values']} | {p['state_values']} | {p['int8_bytes']} | "
                     f"{p['fp32_bytes']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "matched.json").write_text(json.dumps(table, indent=1))
    print("\n".join(lines[:2 + len(table)]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep TOML")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--report", action="store_true", help="only redraw the report")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    out = Path(args.out)
    try:
        sweep = tomllib.loads(Path(args.sweep).read_text(encoding="utf-8"))
        runs = expand(sweep)
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
    from training.runlock import holder
    done = {r["name"] for r in load_results(out)}
    todo = [r for r in runs if r[1] not in done]
    busy = {name: holder(out / "runs" / name) for _, name, _ in todo}
    busy = {name: pid for name, pid in busy.items() if pid}
    for name, pid in busy.items():
        print(f"{name}: skipped, another trainer (pid {pid}) is writing {out / 'runs' / name}; "
              f"rerun the sweep when it has finished (or stop it: kill {pid})", file=sys.stderr)
    todo = [r for r in todo if r[1] not in busy]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to go")
    if args.dry_run:
        for family, name, _ in todo:
            print(f"  {name}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    from concurrent.futures import ThreadPoolExecutor
    failed = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(train_run, name, cfg, out, args.jobs > 1): (family, name)
                   for family, name, cfg in todo}
        for i, fut in enumerate(futures):          # in submission order
            family, name = futures[fut]
            try:
                code = fut.result()
            except KeyboardInterrupt:
                print("interrupted: finished runs are kept; rerun the same command to go on",
                      file=sys.stderr)
                pool.shutdown(wait=False, cancel_futures=True)
                return 130
            if code != 0:
                failed.append(name)
                print(f"[{i + 1}/{len(todo)}] {name}: training failed (exit {code}); see "
                      f"{out / 'runs' / name / 'train.log'}", file=sys.stderr, flush=True)
                continue
            row = measure_run(family, name, out)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{i + 1}/{len(todo)}] {name}: hardened test acc "
                  f"{100 * row['hardened_test_acc']:.2f}%, int8 {row['int8_bytes']} B",
                  flush=True)
    write_report(out, sweep.get("title", ""))
    failed += sorted(busy)
    if failed:
        print(f"error: {len(failed)} run(s) failed or skipped: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
