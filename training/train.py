"""Train an mGRADE network.

    python -m training.train CONFIG --out DIR [--resume] [--epochs N]
    torchrun --nproc_per_node=2 -m training.train CONFIG --out DIR     # DDP (gloo on CPU)

Writes DIR/checkpoint.pt (weights, config, optimiser, schedule, RNG state, progress),
DIR/metrics.jsonl (one JSON object per epoch) and DIR/curves.png. Checkpoints are written at
the end of every epoch, every --ckpt-every seconds and on Ctrl-C/SIGTERM; `--resume` continues
from the last one and ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from training.checkpoint import (FORMAT, CheckpointError, build_model, check_architecture,
                                 load_raw, save_atomic)
from training.config import Config, ConfigError, config_from_dict, load_config
from training.evaluate import evaluate, loss_and_correct
from training.model import sigma_at
from training.plots import plot_curves
from training.tasks import TaskError, load_task

EXIT_USER_ERROR, EXIT_NAN, EXIT_INTERRUPTED = 2, 3, 130


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

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": FORMAT, "config": self.cfg.to_dict(), "task_info": task_info(self.data),
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step,
                "epochs": self.epochs, "running": dict(self.running),
                "rng": {"torch": torch.get_rng_state(),
                        "epoch_shuffle": self.epoch_shuffle_state},
                "history": list(self.history), "hardened": False}

    def save(self):
        if self.rank == 0:
            save_atomic(self.state(), self.out / "checkpoint.pt")
        self.last_save = time.monotonic()

    def restore(self, ckpt: dict):
        if ckpt["config"]["model"] != self.cfg.to_dict()["model"] or \
                ckpt["task_info"] != task_info(self.data):
            raise CheckpointError("the checkpoint in --out was trained with another model or "
                                  "task config; refusing to resume (use another --out)")
        check_architecture(self.net, ckpt["model"])
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.running = dict(ckpt["running"])
        self.history = list(ckpt["history"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.epoch_shuffle_state = ckpt["rng"]["epoch_shuffle"]
        if self.net.delay_convs() and self.net.hardened:
            self.harden()                      # hardened before the checkpoint was taken
        if ckpt["epochs"] != self.epochs and self.rank == 0:
            print(f"note: epochs changed from {ckpt['epochs']} to {self.epochs}; the learning "
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
            raise TrainingStopped(
                f"loss became {float(loss)} at epoch {self.epoch + 1}, step {self.step}; "
                f"stopped. The last good checkpoint is kept in {self.out}. Try a lower "
                f"train.lr or a train.grad_clip > 0.", EXIT_NAN)
        value = loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.net.clamp_positions()
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
            bar = tqdm(total=self.n_batches, initial=self.batch, unit="batch", leave=False,
                       desc=f"epoch {self.epoch + 1}/{self.epochs}", disable=self.rank != 0,
                       mininterval=0.5, dynamic_ncols=True)
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
               "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": round(seconds, 2),
               "seq_per_s": round(seqs / max(seconds, 1e-9), 1)}
        self.history.append(row)
        self.epoch, self.batch = self.epoch + 1, 0
        self.running = {"loss": 0.0, "correct": 0, "count": 0}
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.save()   # checkpoint first: metrics.jsonl is rewritten from its history
        if self.rank == 0:
            write_metrics(self.out, self.history)
            plot_curves(self.history, self.out / "curves.png", title=self.cfg.task.name)
            print(f"epoch {row['epoch']:3d}/{self.epochs}  loss {row['train_loss']:.4f}  "
                  f"train {100 * row['train_acc']:.2f}%  val {100 * row['val_acc']:.2f}%  "
                  f"test {100 * row['test_acc']:.2f}%  ({row['epoch_s']:.1f} s, "
                  f"{row['seq_per_s']:.0f} seq/s)", flush=True)


def write_metrics(out: Path, history: list[dict]):
    tmp = out / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    os.replace(tmp, out / "metrics.jsonl")


def init_distributed():
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="TOML config file")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics, curves)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--epochs", type=int, help="total epochs (overrides train.epochs)")
    p.add_argument("--ckpt-every", type=float, default=120.0,
                   help="also checkpoint within an epoch every this many seconds (default 120)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    trainer = None
    try:
        init_distributed()
        cfg = load_config(args.config)
        if args.epochs is not None:
            if args.epochs <= 0:
                raise ConfigError("--epochs must be > 0")
            cfg.train.epochs = args.epochs
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        ckpt_path = out / "checkpoint.pt"
        if ckpt_path.exists() and not args.resume:
            raise CheckpointError(f"{out} already holds a checkpoint; pass --resume to "
                                  f"continue it, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, out, cfg.train.epochs, args.ckpt_every)
        if args.resume and ckpt_path.exists():
            trainer.restore(load_raw(ckpt_path))
            if trainer.rank == 0:
                print(f"resuming {out} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
        if trainer.rank == 0:
            print(f"task {cfg.task.name}: {len(trainer.data.x_train)} train sequences of "
                  f"{trainer.data.seq_len} steps; model {trainer.net.n_params()} parameters; "
                  f"{trainer.world} process(es)", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(trainer, "stop_requested", True))
        trainer.run()
    except (ConfigError, TaskError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.code
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if trainer.rank == 0 and trainer.history:
        best = max(trainer.history, key=lambda r: r["val_acc"])
        last = trainer.history[-1]
        print(f"done: final test acc {100 * last['test_acc']:.2f}% (val {100 * last['val_acc']:.2f}%;"
              f" best val {100 * best['val_acc']:.2f}% at epoch {best['epoch']}); "
              f"checkpoint {out / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
