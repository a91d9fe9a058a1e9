"""Train an mGRADE network.

    python -m mgrade_edge.training.train CONFIG --out DIR [--resume [--allow-change KEY]] [--epochs N]
    torchrun --nproc_per_node=2 -m mgrade_edge.training.train CONFIG --out DIR     # DDP (gloo on CPU)

Writes DIR/checkpoint.pt (weights, config, optimiser, schedule, RNG state, progress),
DIR/metrics.jsonl (one JSON object per epoch, written every epoch) and DIR/curves.png (after the
first epoch, then at most every 30 s, and at the end or a stop). Checkpoints are written at
the end of every epoch, every --ckpt-every seconds and on Ctrl-C/SIGTERM; `--resume` continues
from the last one and ends with the same weights as an uninterrupted run.

Safety: one trainer per DIR (DIR/train.lock holds its pid; a second one exits 2); a checkpoint
is written only when every tensor in it is finite, and a step that makes the loss or a weight
non-finite (or a weight larger than MAX_WEIGHT) stops the run with exit 3, keeping the last
good checkpoint; `--resume` refuses a config whose task or training settings differ from the
stored one unless each changed key is named with `--allow-change` (`--epochs N` counts as
allowing train.epochs); resuming a finished run rewrites metrics.jsonl and curves.png.

Quantization-aware fine-tuning: with train.qat_epochs = N the last N epochs train with the
int8 weights the converter deploys (training.qat; batch norms frozen at their running
statistics); their val/test accuracies are those of the fake-quantized weights. A finished
run of E epochs is fine-tuned with `--resume --epochs E+N --allow-change train.qat_epochs`.
"""
from __future__ import annotations

if __name__ == "__main__":        # Ctrl-C while torch loads: one line, exit 130
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("nothing was trained or written", hard=True)

import argparse
import ctypes
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from mgrade_edge.training.console import progress, require, say, set_quiet

EXIT_USER_ERROR, EXIT_NAN, EXIT_INTERRUPTED = 2, 3, 130
MAX_WEIGHT = 1e6            # a parameter beyond this magnitude means the run has diverged
PARENT_ENV = "MGRADE_PARENT_PID"   # set by the sweep: die (SIGTERM, checkpoint) with it
CURVES_EVERY_S = 30.0       # curves.png is redrawn at most this often while training

# --resume: keys that may differ silently (they change neither data nor results), keys that
# may change when named with --allow-change, and keys that never may (task, architecture)
HARMLESS_CHANGES = ("task.data_dir", "train.threads", "train.eval_batch_size")
CHANGEABLE = ("train.epochs", "train.batch_size", "train.lr", "train.weight_decay",
              "train.warmup_frac", "train.pos_lr_mult", "train.grad_clip", "train.seed",
              "model.dropout", "model.sigma_start", "model.sigma_end",
              "model.sigma_anneal_frac", "model.harden_at", "train.qat_epochs",
              "train.qat_acts", "train.qat_act_momentum", "train.qat_form")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mgrade_edge.training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="TOML config file")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics, curves)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                   help="with --resume: accept that KEY (e.g. train.lr) differs from the "
                        "stored config; repeatable. Allowed: " + ", ".join(CHANGEABLE))
    p.add_argument("--epochs", type=int, help="total epochs (overrides train.epochs)")
    p.add_argument("--ckpt-every", type=float, default=120.0,
                   help="also checkpoint within an epoch every this many seconds (default 120)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final summary (and errors); progress bars are drawn "
                        "only on a terminal anyway")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args(sys.argv[1:])    # --help and usage errors answer before torch loads
    require("torch", "numpy", "tqdm", "matplotlib", command="-m mgrade_edge.training.train")

# the imports below load torch: after the early parse (hence noqa: E402)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from mgrade_edge.training.checkpoint import (FORMAT, CheckpointError, NonFiniteError,  # noqa: E402
                                 build_model, check_architecture, load_raw, save_atomic)
from mgrade_edge.training.config import Config, ConfigError, config_from_dict, load_config  # noqa: E402
from mgrade_edge.training.evaluate import evaluate, loss_and_correct, percent  # noqa: E402
from mgrade_edge.training.interrupt import deferred_interrupt, exit_on_interrupt  # noqa: E402
from mgrade_edge.training.model import sigma_at  # noqa: E402
from mgrade_edge.training.plots import plot_curves  # noqa: E402
from mgrade_edge.training.qat import act_ranges, load_act_ranges  # noqa: E402
from mgrade_edge.training.runlock import LockedError, RunLock  # noqa: E402
from mgrade_edge.training.tasks import TaskError, load_task  # noqa: E402


class TrainingStopped(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warm-up over warmup_frac of all steps, then cosine decay to 0."""
    warmup = int(total * warmup_frac)
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def task_info(data) -> dict:
    info = {"n_in": data.n_in, "n_classes": data.n_classes, "readout": data.readout,
            "seq_len": data.seq_len, "name": data.name}
    for key in ("class_names", "input_mean", "input_std"):    # user-data tasks (ts, npz)
        if getattr(data, key, None) is not None:
            info[key] = list(getattr(data, key))
    return info


class Trainer:
    """One training run; holds everything a checkpoint must restore."""

    def __init__(self, cfg: Config, out: Path, epochs: int, ckpt_every: float):
        self.cfg, self.out, self.epochs, self.ckpt_every = cfg, out, epochs, ckpt_every
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None,
                              cfg.task.seed)
        torch.manual_seed(cfg.train.seed)
        self.net = build_model(cfg, task_info(self.data))
        self.model = (torch.nn.parallel.DistributedDataParallel(self.net)
                      if self.world > 1 else self.net)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(self.net.param_groups(t.weight_decay, t.lr,
                                                                 t.pos_lr_mult))
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.shuffle = torch.Generator().manual_seed(t.seed)
        self.n_batches = max(1, len(self.data.x_train) // t.batch_size)
        self.total_steps = self.epochs * self.n_batches
        self.epoch, self.batch, self.step = 0, 0, 0
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.running = {"loss": 0.0, "correct": 0, "count": 0}
        self.history: list[dict] = []
        self.stop_requested = False
        self.saved_at: tuple[int, int] | None = None   # (epoch, batch) of the last checkpoint
        self.plotted_at: float | None = None            # time.monotonic() of the last curves.png

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": FORMAT, "config": self.cfg.to_dict(), "task_info": task_info(self.data),
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step,
                "epochs": self.epochs, "running": dict(self.running),
                "rng": {"torch": torch.get_rng_state(),
                        "epoch_shuffle": self.epoch_shuffle_state},
                "history": list(self.history), "hardened": False,
                "act_ranges": act_ranges(self.net)}

    def save(self):
        if self.rank == 0:
            try:
                save_atomic(self.state(), self.out / "checkpoint.pt")
            except NonFiniteError as e:
                raise TrainingStopped(self.diverged(str(e)), EXIT_NAN) from None
        self.saved_at = (self.epoch, self.batch)
        self.last_save = time.monotonic()

    def diverged(self, what: str) -> str:
        """The message of a run stopped because it diverged."""
        where = f"at epoch {self.epoch + 1}, step {self.step}"
        if self.saved_at is None:
            kept = "no checkpoint was written before it"
        else:
            e, b = self.saved_at
            kept = (f"the last good checkpoint {self.out / 'checkpoint.pt'} (epoch {e}"
                    + (f", batch {b}" if b else "") + ") is kept")
        return (f"training diverged {where}: {what}; stopped, {kept}. Try a lower train.lr "
                f"or a train.grad_clip > 0.")

    def check_weights(self):
        """Stop when a step left a parameter non-finite or beyond MAX_WEIGHT."""
        with torch.no_grad():
            worst = float(torch.stack([p.abs().amax() for p in self.net.parameters()
                                       if p.numel()]).max())
        if not math.isfinite(worst) or worst > MAX_WEIGHT:
            raise TrainingStopped(self.diverged(
                f"a weight became {worst:g}" + (f" (> {MAX_WEIGHT:g})"
                                                if math.isfinite(worst) else "")), EXIT_NAN)

    def restore(self, ckpt: dict):
        if ckpt["task_info"] != task_info(self.data):
            raise CheckpointError("the checkpoint in --out was trained with another model or "
                                  "task config; refusing to resume (use another --out)")
        check_architecture(self.net, ckpt["model"])
        try:
            self.net.load_state_dict(ckpt["model"])
            if "act_ranges" in ckpt:            # older checkpoints: ranges never set
                load_act_ranges(self.net, ckpt["act_ranges"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
            self.running = dict(ckpt["running"])
            self.history = list(ckpt["history"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            self.epoch_shuffle_state = ckpt["rng"]["epoch_shuffle"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the checkpoint in {self.out} is damaged and cannot be "
                                  f"resumed ({type(e).__name__}: {str(e)[:200]}); use another "
                                  f"--out") from None
        self.saved_at = (self.epoch, self.batch)
        if self.net.delay_convs() and self.net.hardened:
            self.harden()                      # hardened before the checkpoint was taken
        if ckpt["epochs"] != self.epochs and self.rank == 0:
            say(f"note: epochs changed from {ckpt['epochs']} to {self.epochs}; the learning "
                f"rate and sigma schedules follow the new length")

    # -- one step -----------------------------------------------------------------------------
    def set_schedules(self):
        factor = lr_factor(self.step, self.total_steps, self.cfg.train.warmup_frac)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        progress = self.step / max(1, self.total_steps)
        self.net.set_sigma(sigma_at(self.cfg.model, progress))
        if progress >= self.cfg.model.harden_at and self.cfg.model.harden_at < 1.0:
            self.harden()
        t = self.cfg.train
        self.net.set_qat(self.in_qat(), acts=t.qat_acts, momentum=t.qat_act_momentum,
                         form=t.qat_form)

    def in_qat(self) -> bool:
        """Whether the current epoch trains with fake-quantized weights (the last
        train.qat_epochs epochs)."""
        n = self.cfg.train.qat_epochs
        return n > 0 and self.epoch >= self.epochs - n

    def harden(self):
        """Round learned positions to integer delays (once, at `model.harden_at`); training
        goes on with exact sparse taps, so the weights adapt to what the board computes."""
        convs = [c for c in self.net.delay_convs() if c.kind == "dcls"]
        if not convs or all(not c.positions.requires_grad for c in convs):
            return
        self.net.harden()                      # positions stop taking gradients
        if self.world > 1:                     # DDP must not wait for their gradients
            self.model = torch.nn.parallel.DistributedDataParallel(self.net)

    def train_batch(self, idx: torch.Tensor) -> float:
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        lengths = self.data.len_train[idx] if self.data.len_train is not None else None
        if lengths is not None:               # variable length: padded steps are masked
            T = int(lengths.max())
            x, y = x[:, :T], (y[:, :T] if y.ndim == 2 else y)
        self.set_schedules()
        logits = self.model(x) if lengths is None else self.model(x, lengths)
        loss, correct, count = loss_and_correct(logits, y)
        if not torch.isfinite(loss):
            raise TrainingStopped(self.diverged(f"loss became {float(loss)}"), EXIT_NAN)
        value = loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip)
        try:
            self.optimizer.step()
        except RuntimeError as e:                 # lr so large that the update overflows
            if "overflow" not in str(e):
                raise
            raise TrainingStopped(self.diverged("the optimiser step overflowed float32"),
                                  EXIT_NAN) from None
        self.net.clamp_positions()
        self.check_weights()                   # before anything can save this step
        self.step += 1
        self.running["loss"] += value * count
        self.running["correct"] += correct
        self.running["count"] += count
        return value

    # -- the loop -------------------------------------------------------------------------------
    def run(self):
        t = self.cfg.train
        self.last_save = time.monotonic()
        while self.epoch < self.epochs:
            self.shuffle.set_state(self.epoch_shuffle_state)
            perm = torch.randperm(len(self.data.x_train), generator=self.shuffle)
            bar = progress(total=self.n_batches, initial=self.batch, unit="batch", leave=False,
                           desc=f"epoch {self.epoch + 1}/{self.epochs}",
                           disable=self.rank != 0, mininterval=0.5)
            start, seqs = time.monotonic(), 0
            while self.batch < self.n_batches:
                idx = perm[self.batch * t.batch_size:(self.batch + 1) * t.batch_size]
                loss = self.train_batch(idx[self.rank::self.world])
                self.batch += 1
                seqs += len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}",
                                seq_s=f"{seqs / max(1e-9, time.monotonic() - start):.0f}")
                if self.stop_requested:
                    self.save()
                    bar.close()
                    raise TrainingStopped(f"interrupted; checkpoint saved in {self.out}. "
                                          f"Continue with --resume.", EXIT_INTERRUPTED)
                if time.monotonic() - self.last_save > self.ckpt_every:
                    self.save()
            bar.close()
            self.end_epoch(time.monotonic() - start, seqs)

    def end_epoch(self, seconds: float, seqs: int):
        ev = self.cfg.train.eval_batch_size
        val = evaluate(self.net, self.data.x_val, self.data.y_val, ev, self.data.len_val)
        test = evaluate(self.net, self.data.x_test, self.data.y_test, ev, self.data.len_test)
        r = self.running
        row = {"epoch": self.epoch + 1, "step": self.step,
               "train_loss": r["loss"] / max(1, r["count"]),
               "train_acc": r["correct"] / max(1, r["count"]),
               "val_loss": val["loss"], "val_acc": val["acc"], "test_acc": test["acc"],
               "sigma": float(self.net.delay_convs()[0].sigma) if self.net.delay_convs() else None,
               "lr": self.optimizer.param_groups[0]["lr"], "qat": self.net.qat,
               "epoch_s": round(seconds, 2),
               "seq_per_s": round(seqs / max(seconds, 1e-9), 1)}
        self.history.append(row)
        self.epoch, self.batch = self.epoch + 1, 0
        self.running = {"loss": 0.0, "correct": 0, "count": 0}
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.save()   # checkpoint first: metrics.jsonl is rewritten from its history
        if self.rank == 0:
            self.write_outputs()
            say(f"epoch {row['epoch']:3d}/{self.epochs}  loss {row['train_loss']:.4f}  "
                f"train {100 * row['train_acc']:.2f}%  val {percent(row['val_acc'])}  "
                f"test {percent(row['test_acc'])}  ({row['epoch_s']:.1f} s, "
                f"{row['seq_per_s']:.0f} seq/s)")
            best = max(r["val_acc"] for r in self.history)
            chance = self.chance()
            if row["val_acc"] <= chance and best > 2 * chance:
                print(f"warning: validation accuracy collapsed from {100 * best:.2f}% to "
                      f"{100 * row['val_acc']:.2f}% (chance level); the run has probably "
                      f"diverged: try a lower train.lr", file=sys.stderr, flush=True)

    def chance(self) -> float:
        """Accuracy at chance level, with a margin: 1.2 / n_classes."""
        return 1.2 / max(1, self.data.n_classes)

    def write_outputs(self, plot: bool | None = None):
        """metrics.jsonl and curves.png from the history (idempotent; each file atomic).
        metrics.jsonl every time; curves.png (half a second of matplotlib) after the first
        epoch, then at most every CURVES_EVERY_S seconds, and always with plot=True (the end
        of the run, a stop)."""
        if not self.history:
            return
        write_metrics(self.out, self.history)
        now = time.monotonic()
        if plot is None:
            plot = self.plotted_at is None or now - self.plotted_at >= CURVES_EVERY_S
        if plot:
            tmp = self.out / "curves.tmp.png"
            plot_curves(self.history, tmp, title=self.cfg.task.name)
            os.replace(tmp, self.out / "curves.png")
            self.plotted_at = now

    def finish(self):
        """Everything a finished run holds besides its checkpoint, written again (a kill
        after the last checkpoint may have left it missing or stale)."""
        if self.rank != 0 or not self.history:
            return
        self.write_outputs(plot=True)
        last = self.history[-1]
        if last["val_acc"] <= self.chance():
            print(f"warning: final validation accuracy {100 * last['val_acc']:.2f}% is at "
                  f"chance level ({100 / max(1, self.data.n_classes):.1f}%): the run did not "
                  f"learn (diverged?); try a lower train.lr", file=sys.stderr, flush=True)


def write_metrics(out: Path, history: list[dict]):
    tmp = out / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    os.replace(tmp, out / "metrics.jsonl")


def flat(cfg: dict) -> dict:
    """{"table.key": value} of a config dict."""
    return {f"{table}.{k}": v for table, items in cfg.items() for k, v in items.items()}


def normalised(cfg: dict) -> dict:
    """A config dict with every default filled in (so that a key left out and the same key
    given at its default compare equal); a stored config this version cannot read is an
    error."""
    from mgrade_edge.training.tasks import task_defaults
    try:
        full = config_from_dict(cfg).to_dict()
        full["task"] = {**task_defaults(full["task"]["name"]), **full["task"]}
    except (ConfigError, TaskError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"the config stored in the checkpoint is not valid for this "
                              f"version ({e}); use another --out") from None
    return full


def check_resume_config(stored: dict, given: dict, allowed: set[str], mid_epoch: bool,
                        out: Path) -> list[str]:
    """Compare a checkpoint's config with the one given to --resume. Returns the notes for
    the allowed changes; raises CheckpointError listing every other difference."""
    old, new = flat(normalised(stored)), flat(normalised(given))
    diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in HARMLESS_CHANGES}
    def listing(keys):
        return ", ".join(f"{k} {diff[k][0]!r} -> {diff[k][1]!r}".replace("'", "")
                         for k in keys)

    arch = [k for k in diff if k.startswith("model.") and k not in CHANGEABLE]
    if arch:
        raise CheckpointError(f"the checkpoint in {out} was trained with another model config "
                              f"({listing(arch)}); refusing to resume (use another --out)")
    task = [k for k in diff if k.startswith("task.")]
    if task:
        raise CheckpointError(f"the checkpoint in {out} was trained on another task config "
                              f"({listing(task)}); a resumed run must see the same data: use "
                              f"another --out")
    refused = [k for k in diff if k not in allowed]
    if refused:
        raise CheckpointError(f"--resume with a changed config: {listing(refused)}; use the "
                              f"config stored in {out} or accept the change with "
                              + " ".join(f"--allow-change {k}" for k in refused))
    if mid_epoch and "train.batch_size" in diff:
        raise CheckpointError(f"train.batch_size can change only at an epoch boundary; the "
                              f"checkpoint in {out} is in the middle of an epoch")
    return [f"{k} changed from {a} to {b}" for k, (a, b) in diff.items()]


def die_with_parent():
    """Under the sweep: get SIGTERM (checkpoint, exit) when the sweep process dies."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)        # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):                    # it died before prctl
        raise TrainingStopped("the sweep that started this run has exited", EXIT_INTERRUPTED)


def init_distributed():
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def set_threads(wanted: int, rank: int):
    """torch threads: train.threads, at most the machine's cores (0 = torch's default)."""
    if wanted <= 0:
        return
    cores = os.cpu_count() or 1
    if wanted > cores and rank == 0:
        print(f"note: train.threads = {wanted} but this machine has {cores} cores; using "
              f"{cores}", file=sys.stderr)
    torch.set_num_threads(min(wanted, cores))


def prepare_out(out: Path, rank: int) -> RunLock | None:
    """Create --out and lock it for this process (rank 0); checks it is writable now, not at
    the first save."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if rank != 0:
            return None
        lock = RunLock(out).acquire()
        probe = out / ".write-test.tmp"
        probe.write_bytes(b"")
        probe.unlink()
        return lock
    except LockedError as e:
        raise CheckpointError(str(e)) from None
    except OSError as e:
        raise CheckpointError(f"cannot write to --out {out} ({e.strerror or e}); choose a "
                              f"writable folder") from None


def step_range(lengths, seq_len: int) -> str:
    """'120', or '40-120' for variable-length sequences (lengths: their own step counts)."""
    if lengths is None or len(lengths) == 0:
        return str(seq_len)
    lo, hi = int(lengths.min()), int(lengths.max())
    return str(hi) if lo == hi else f"{lo}-{hi}"


def main(argv=None) -> int:
    args = parse_args(argv)
    set_quiet(args.quiet)
    out = Path(args.out)
    trainer, lock = None, None
    created = not out.exists()        # removed again if nothing gets written into it
    try:
        die_with_parent()
        init_distributed()
        rank = dist.get_rank() if dist.is_initialized() else 0
        cfg = load_config(args.config)
        if args.epochs is not None:
            if args.epochs <= 0:
                raise ConfigError("--epochs must be > 0")
            cfg.train.epochs = args.epochs
            cfg.train.validate()                # train.qat_epochs <= the new epochs
        bad = [k for k in args.allow_change if k not in CHANGEABLE]
        if bad:
            raise ConfigError(f"--allow-change {bad[0]}: not a key that may change on resume; "
                              f"allowed: {', '.join(CHANGEABLE)}")
        if args.allow_change and not args.resume:
            raise ConfigError("--allow-change only applies with --resume")
        ckpt_path = out / "checkpoint.pt"
        if ckpt_path.exists() and not args.resume:
            raise CheckpointError(f"{out} already holds a checkpoint; pass --resume to "
                                  f"continue it, or choose another --out")
        with deferred_interrupt():        # a Ctrl-C here still releases the lock
            lock = prepare_out(out, rank)
        ckpt = None
        if args.resume and ckpt_path.exists():
            ckpt = load_raw(ckpt_path, resume=True)
            allowed = set(args.allow_change) | ({"train.epochs"} if args.epochs else set())
            notes = check_resume_config(ckpt["config"], cfg.to_dict(), allowed,
                                        bool(ckpt["batch"]), out)
            if rank == 0:
                for note in notes:
                    say(f"note: {note} (allowed)")
        set_threads(cfg.train.threads, rank)
        trainer = Trainer(cfg, out, cfg.train.epochs, args.ckpt_every)
        if ckpt is not None:
            trainer.restore(ckpt)
            if trainer.rank == 0:
                say(f"resuming {out} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
        if trainer.rank == 0:
            say(f"task {cfg.task.name}: {len(trainer.data.x_train)} train sequences of "
                f"{step_range(trainer.data.len_train, trainer.data.seq_len)} steps; model "
                f"{trainer.net.n_params()} parameters; {trainer.world} process(es)")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(trainer, "stop_requested", True))
        trainer.run()
        trainer.finish()
    except (ConfigError, TaskError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingStopped as e:
        if trainer is not None:
            trainer.finish()          # curves.png up to the last finished epoch
        print(f"stopped: {e}", file=sys.stderr)
        return e.code
    except (MemoryError, torch.OutOfMemoryError) as e:
        print(f"error: out of memory ({str(e).splitlines()[0][:160] if str(e) else 'MemoryError'});"
              f" use a smaller model, batch_size or data set", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        if lock is not None:
            lock.release()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()               # stopped (bad data, Ctrl-C) before anything was saved
        if dist.is_initialized():
            dist.destroy_process_group()
    if trainer.rank == 0 and trainer.history:
        best = max(trainer.history, key=lambda r: r["val_acc"])
        last = trainer.history[-1]
        print(f"done: final test acc {percent(last['test_acc'])} "
              f"(val {100 * last['val_acc']:.2f}%;"
              f" best val {100 * best['val_acc']:.2f}% at epoch {best['epoch']}); "
              f"checkpoint {out / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    exit_on_interrupt("nothing was trained or written")   # until training installs its own
    sys.exit(main())
