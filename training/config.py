"""Run configuration: TOML in, validated dataclasses out.

A config file has three tables, each optional except [task]:

    [task]   name = "digits", data_dir = "...", seed = 0, plus the task's own parameters
    [model]  the network (ModelConfig)
    [train]  the optimisation (TrainConfig)

Every key is checked: an unknown key or a value of the wrong type raises ConfigError with
the key, what was expected and the valid keys.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


class ConfigError(ValueError):
    """A user mistake in a config file or a checkpoint's config."""


# Sane upper bounds: far above any model that fits a microcontroller (or the paper's), low
# enough that a typo (d_model = 100000, kernel_span = 100000000) gets a message instead of an
# allocation failure. Delays are stored as uint16 on the device (convert.codegen_mgrade).
MAX_D_MODEL = 4096
MAX_LAYERS = 64
MAX_SPAN = 65536
MAX_TAPS = 1024
MAX_MLP_RATIO = 16
QAT_FORMS = ("int8", "state16", "input16", "conv16", "mlp16", "conv_mlp16")  # forms.FORMS
MAX_CONV_WEIGHTS = 1 << 25       # d_model * kernel_span: the dense DCLS kernel, per layer
MAX_THREADS = 1024
MAX_BATCH = 1 << 20
MAX_EPOCHS = 1_000_000
MAX_SEQ_LEN = 100_000            # task.seq_len
MAX_SEQUENCES = 10_000_000       # task.n_train / n_val / n_test / max_*
MAX_TASK_VALUES = 1 << 28        # (n_train + n_val + n_test) * seq_len


@dataclass
class ModelConfig:
    d_model: int = 32            # H: channels of every layer
    n_layers: int = 2            # L
    encoder: bool = True         # Dense(n_in -> H); without it n_in must equal H
    use_conv: bool = True        # delay convolution in each block
    conv: str = "dcls"           # "dcls" (learnable spacings) | "dilated" (fixed dilated taps)
    kernel_span: int = 16        # K: maximal delay + 1, frames
    n_taps: int = 4              # N taps per channel
    dilation: int = 4            # "dilated" only: tap e sits at delay e * dilation
    use_rnn: bool = True         # minGRU in each block
    rnn_out: str = "linear"      # minGRU output activation: linear | sigmoid | gelu | relu
    norm: str = "batch"          # "batch" (deployable) | "layer" (paper) | "none"
    mlp_ratio: int = 2           # MLP hidden = mlp_ratio * H
    act: str = "relu"            # "relu" | "gelu"
    dropout: float = 0.0
    sigma_start: float = 0.0     # Gaussian width at the start, frames; 0 -> K / 3
    sigma_end: float = 0.23      # floor reached after sigma_anneal_frac of training
    sigma_anneal_frac: float = 0.5
    harden_at: float = 0.8       # after this part of training the positions are rounded to
                                 # integer delays and training goes on with the exact sparse
                                 # taps (what the board runs); 1 = never during training

    def validate(self):
        _choice("model.conv", self.conv, ("dcls", "dilated"))
        _choice("model.norm", self.norm, ("batch", "layer", "none"))
        _choice("model.act", self.act, ("relu", "gelu"))
        _choice("model.rnn_out", self.rnn_out, ("linear", "sigmoid", "gelu", "relu"))
        _positive("model.d_model", self.d_model)
        _positive("model.n_layers", self.n_layers)
        _positive("model.kernel_span", self.kernel_span)
        _positive("model.n_taps", self.n_taps)
        _positive("model.dilation", self.dilation)
        _positive("model.mlp_ratio", self.mlp_ratio)
        _at_most("model.d_model", self.d_model, MAX_D_MODEL)
        _at_most("model.n_layers", self.n_layers, MAX_LAYERS)
        _at_most("model.kernel_span", self.kernel_span, MAX_SPAN)
        _at_most("model.n_taps", self.n_taps, MAX_TAPS)
        _at_most("model.dilation", self.dilation, MAX_SPAN - 1)
        _at_most("model.mlp_ratio", self.mlp_ratio, MAX_MLP_RATIO)
        if self.conv == "dilated" and self.span > MAX_SPAN:
            raise ConfigError(f"model: (n_taps - 1) * dilation + 1 = {self.span} exceeds the "
                              f"largest span {MAX_SPAN}")
        if self.use_conv and self.d_model * self.span > MAX_CONV_WEIGHTS:
            raise ConfigError(f"model: d_model * kernel_span = {self.d_model * self.span} "
                              f"exceeds {MAX_CONV_WEIGHTS}; use a smaller d_model or span")
        if not (self.use_conv or self.use_rnn):
            raise ConfigError("model: use_conv and use_rnn are both false; a block needs at "
                              "least one temporal mixer")
        if self.conv == "dcls" and self.n_taps > self.kernel_span:
            raise ConfigError(f"model.n_taps={self.n_taps} exceeds model.kernel_span="
                              f"{self.kernel_span}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.sigma_anneal_frac <= 1.0:
            raise ConfigError("model.sigma_anneal_frac must be in [0, 1]")
        if not 0.0 <= self.harden_at <= 1.0:
            raise ConfigError(f"model.harden_at must be in [0, 1], got {self.harden_at}")
        if self.sigma_end <= 0:
            raise ConfigError("model.sigma_end must be > 0")
        if self.sigma_start < 0:
            raise ConfigError(f"model.sigma_start must be >= 0, got {self.sigma_start}")

    @property
    def span(self) -> int:
        """Frames the conv looks back, delay 0 included."""
        if self.conv == "dilated":
            return (self.n_taps - 1) * self.dilation + 1
        return self.kernel_span


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.1     # linear warm-up over this part of all steps, then cosine to 0
    pos_lr_mult: float = 5.0     # positions: lr x this, no weight decay
    grad_clip: float = 1.0       # 0 disables
    seed: int = 0
    eval_batch_size: int = 256
    threads: int = 0             # torch threads; 0 = torch's default
    qat_epochs: int = 0          # the last this many epochs train with the int8 weights the
                                 # converter deploys (training.qat); 0 = off
    qat_acts: bool = False       # QAT epochs also fake-quantize the non-recurrent activations
                                 # (per-tensor int8 on EMA min / max ranges, training.qat)
    qat_act_momentum: float = 0.9   # EMA momentum of those ranges; 1 = frozen after the
                                    # first QAT batch
    qat_form: str = "int8"       # with qat_acts: the converter's form the activations train for
                                 # (convert/forms.py): its int16 tensors on int16 grids

    def validate(self):
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.eval_batch_size", self.eval_batch_size)
        _at_most("train.epochs", self.epochs, MAX_EPOCHS)
        _at_most("train.batch_size", self.batch_size, MAX_BATCH)
        _at_most("train.eval_batch_size", self.eval_batch_size, MAX_BATCH)
        if self.lr <= 0:
            raise ConfigError("train.lr must be > 0")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError("train.warmup_frac must be in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.pos_lr_mult < 0:
            raise ConfigError(f"train.pos_lr_mult must be >= 0, got {self.pos_lr_mult}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.qat_epochs < 0:
            raise ConfigError(f"train.qat_epochs must be >= 0 (0 = no quantization-aware "
                              f"training), got {self.qat_epochs}")
        if self.qat_epochs > self.epochs:
            raise ConfigError(f"train.qat_epochs = {self.qat_epochs} exceeds train.epochs = "
                              f"{self.epochs}: QAT runs in the last qat_epochs of the epochs")
        if self.qat_acts and self.qat_epochs == 0:
            raise ConfigError("train.qat_acts = true needs train.qat_epochs > 0 (activations "
                              "are fake-quantized in the QAT epochs only)")
        _choice("train.qat_form", self.qat_form, QAT_FORMS)
        if self.qat_form != "int8" and not self.qat_acts:
            raise ConfigError(f"train.qat_form = {self.qat_form!r} sets activation grids: it "
                              f"needs train.qat_acts = true")
        if not 0.0 <= self.qat_act_momentum <= 1.0:
            raise ConfigError(f"train.qat_act_momentum must be in [0, 1] (1 = range frozen "
                              f"after the first QAT batch), got {self.qat_act_momentum}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"train.threads must be in 0..{MAX_THREADS} (0 = torch's "
                              f"default; more than the machine's cores only slows down), got "
                              f"{self.threads}")


@dataclass
class TaskConfig:
    name: str = "digits"
    data_dir: str = ""           # folder with the data set's standard files (real data sets)
    seed: int = 0                # data generation / split / permutation seed
    params: dict = field(default_factory=dict)   # the task's own parameters


@dataclass
class Config:
    task: TaskConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        task = {"name": self.task.name, "data_dir": self.task.data_dir,
                "seed": self.task.seed, **self.task.params}
        return {"task": task, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}


def _choice(key, value, valid):
    if value not in valid:
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(repr, valid))}")


def _positive(key, value):
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _at_most(key, value, bound):
    if value > bound:
        raise ConfigError(f"{key} = {value} is larger than the supported maximum {bound}")


def _check_task_sizes(params: dict):
    """Bounds on the sizes a task generates (task.seq_len, n_train, ...)."""
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if key == "seq_len" and value > MAX_SEQ_LEN:
            raise ConfigError(f"task.seq_len = {value} is larger than the supported maximum "
                              f"{MAX_SEQ_LEN}")
        if (key.startswith("n_") or key.startswith("max_")) and value > MAX_SEQUENCES:
            raise ConfigError(f"task.{key} = {value} is larger than the supported maximum "
                              f"{MAX_SEQUENCES}")
    seq_len = params.get("seq_len")
    if isinstance(seq_len, int) and not isinstance(seq_len, bool):
        n = sum(v for k, v in params.items() if k in ("n_train", "n_val", "n_test")
                and isinstance(v, int) and not isinstance(v, bool))
        if n * seq_len > MAX_TASK_VALUES:
            raise ConfigError(f"task: (n_train + n_val + n_test) * seq_len = {n * seq_len} "
                              f"exceeds {MAX_TASK_VALUES}; the data set would not fit in memory")


def _type_ok(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _fill(cls, table: dict, section: str):
    """Build dataclass `cls` from a TOML table, checking names and types."""
    known = {f.name: f for f in fields(cls)}
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"unknown key '{section}.{key}'; valid keys in [{section}]: "
                              f"{', '.join(sorted(known))}")
        default = known[key].default
        if not _type_ok(value, default):
            raise ConfigError(f"'{section}.{key}' must be {type(default).__name__}, got "
                              f"{type(value).__name__} ({value!r})")
        if isinstance(default, float) and not math.isfinite(value):
            raise ConfigError(f"'{section}.{key}' must be a finite number, got {value}")
        values[key] = float(value) if isinstance(default, float) else value
    obj = cls(**values)
    obj.validate()
    return obj


def _task_from_table(table: dict) -> TaskConfig:
    from mgrade_edge.training.tasks import TaskError, task_defaults

    if not isinstance(table, dict) or "name" not in table:
        raise ConfigError("[task] needs a 'name'")
    name = table["name"]
    if not isinstance(name, str):
        raise ConfigError("'task.name' must be a string")
    try:
        defaults = task_defaults(name)
    except TaskError as e:
        raise ConfigError(str(e)) from None
    common = {"name": "", "data_dir": "", "seed": 0}
    params = {}
    for key, value in table.items():
        if key in common:
            if not _type_ok(value, common[key]):
                raise ConfigError(f"'task.{key}' must be {type(common[key]).__name__}, got "
                                  f"{type(value).__name__} ({value!r})")
            continue
        if key not in defaults:
            raise ConfigError(f"unknown key 'task.{key}' for task '{name}'; valid keys: "
                              f"{', '.join(sorted([*common, *defaults]))}")
        if defaults[key] is not None and not _type_ok(value, defaults[key]):
            raise ConfigError(f"'task.{key}' must be {type(defaults[key]).__name__}, got "
                              f"{type(value).__name__} ({value!r})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"'task.{key}' must be a finite number, got {value}")
        params[key] = value
    _check_task_sizes({**{k: v for k, v in defaults.items() if v is not None}, **params})
    return TaskConfig(name=name, data_dir=table.get("data_dir", ""),
                      seed=table.get("seed", 0), params=params)


def config_from_dict(raw: dict) -> Config:
    """Validate a parsed TOML document (or a checkpoint's stored config)."""
    valid = ("task", "model", "train")
    for key in raw:
        if key not in valid:
            raise ConfigError(f"unknown table [{key}]; valid tables: {', '.join(valid)}")
    if "task" not in raw:
        raise ConfigError("the config needs a [task] table with at least name = \"...\"")
    cfg = Config(task=_task_from_table(raw["task"]),
                 model=_fill(ModelConfig, raw.get("model", {}), "model"),
                 train=_fill(TrainConfig, raw.get("train", {}), "train"))
    check_qat(cfg)
    return cfg


def check_qat(cfg: Config):
    """Quantization-aware training folds the norms as the converter does: no layer norm."""
    if cfg.train.qat_epochs > 0 and cfg.model.norm == "layer":
        raise ConfigError("train.qat_epochs > 0 needs model.norm = \"batch\" or \"none\": a "
                          "layer norm does not fold into the int8 graph")


def load_config(path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a TOML config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
    return config_from_dict(raw)
