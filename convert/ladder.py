"""`--form auto` (convert's default; also `--state-bits auto`): which rung of the widening
ladder (convert/forms.py) a model is deployed in, chosen by measurement.

    model, fields = choose(raw, spec, info, data, val_n, float_val_acc)

Rule, on the first val_n validation sequences (the last val_n training sequences where the
task has none), every accuracy from the host-compiled C package (convert/host_eval.py,
bit-exact with TFLite-Micro and cross-checked against it on the first sequences):

1. the int8 form and the int16 form of earlier releases (input16, or state16 where no layer
   takes an int16 input) are evaluated; of these two the more accurate is kept (a tie keeps
   int8): the earlier `--state-bits auto`;
2. if that one is within BOUND_POINTS (0.5) points of the float (hardened) network's accuracy
   on the same sequences (for a train.qat_epochs run: the QAT view's, what its QAT epochs
   trained; convert passes it as float_val_acc), it is the choice (and always when the float accuracy is not given),
   or the cheapest rung between int8 and it that is within the bound too (state16 where
   input16 was kept: the same int16 state, fewer instructions);
3. else every rung is evaluated and the cheapest within the bound kept; if none is, the most
   accurate (a tie keeps the cheaper).

The rung just below the choice is evaluated too (the table's "next cheaper"). Every tried form
gets its instructions per step on the emulated Cortex-M4 (QEMU, the fast C path, the
default, over the first test sequence's first resources.MAX_STEPS steps, as report.json's
resource table, so that the chosen form's row and that table agree and share one build:
convert/resources.py; the
chosen form's resource table in report.json `resources` has both paths) and its RAM (state +
step scratch); without the cross toolchain the MAC count and the package's own RAM figures
stand in (cost_source says which). Reported in report.json (forms_tried, form, ...) and
printed as one table.
"""
from __future__ import annotations

import subprocess

import numpy as np

from mgrade_edge.convert import forms, host_eval
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.stream import Streamer, predictions
from mgrade_edge.training.console import progress, say
from mgrade_edge.training.evaluate import IGNORE, accuracy

BOUND_POINTS = 0.5
NEXT_MODEL = "_next_cheaper_model"    # choose's field with the next-cheaper form's bytes


def val_accuracy(model_bytes: bytes, x_q: np.ndarray, y: np.ndarray, readout: str,
                 lengths: np.ndarray | None) -> float:
    """Accuracy of a step model's TFLite-Micro int8 arithmetic on int8 sequences x_q [N, T,
    n_in] (each over its own steps with `lengths`; per-step labels -100 are ignored): the host
    C package, cross-checked against TFLite-Micro (convert/host_eval.py)."""
    out, _ = host_eval.int8_logits(model_bytes, x_q, lengths, note=say,
                                   progress=lambda r: progress(r, desc="validate", unit="seq",
                                                               leave=False))
    preds = [predictions(o, readout) for o in out]    # padded steps: zero logits, label -100
    p, mask = np.asarray(preds), y != IGNORE
    return accuracy(int((p[mask] == y[mask]).sum()), int(mask.sum()))


def val_split(data, val_n: int, note=say):
    """(x [N, T, C] float tensor, y numpy, lengths numpy or None, split name) of the sequences
    the choice is made on: the first val_n validation sequences, or the last val_n training
    ones (with a note) where the task has no validation split."""
    split = "val"
    xv, yv, lv = data.x_val[:val_n], data.y_val[:val_n], data.len_val
    lv = None if lv is None else lv[:val_n]
    if len(xv) == 0:
        split = "train"
        note(f"note: --state-bits auto: the task has no validation split; choosing on the "
            f"last {min(val_n, len(data.x_train))} training sequences (--state-bits 8|16 "
            f"to choose yourself)")
        xv, yv, lv = data.x_train[-val_n:], data.y_train[-val_n:], data.len_train
        lv = None if lv is None else lv[-val_n:]
    if len(xv) == 0:
        raise ConvertError("--state-bits auto needs validation or training sequences; the "
                           "task has none (choose --state-bits 8 or 16)")
    return xv, yv.numpy(), None if lv is None else lv.numpy(), split


def float_val_accuracy(net, data, val_n: int) -> float | None:
    """The float (hardened) network's accuracy on the sequences `choose` judges on."""
    from mgrade_edge.training.evaluate import evaluate

    try:
        xv, yv, lv, _ = val_split(data, val_n, note=lambda s: None)
    except ConvertError:
        return None
    import torch

    y = torch.as_tensor(yv)
    return evaluate(net, xv, y, lengths=None if lv is None else torch.as_tensor(lv))["acc"]


def cost_sequence(streamer: Streamer, data, x_val_q: np.ndarray) -> np.ndarray:
    """int8 [1, T, n_in]: the sequence the costs are measured on, the one report.json's
    resource table streams (the first test sequence over its own steps, quantized as
    test_data.npz), or the first validation sequence where the task has no test sequences."""
    if len(data.x_test) == 0:
        return x_val_q[:1]
    x = data.x_test[:1].numpy()
    if data.len_test is not None:
        x = x[:, :int(data.len_test[0])]
    return streamer.quantize_input(x)


def cost(model_bytes: bytes, x_q: np.ndarray) -> dict:
    """Instructions per step (mean, the fast C path: the default) and RAM bytes of one form,
    on the emulated Cortex-M4 streaming x_q [1, T, n_in] (resources.measure's steps); the MAC
    count and the package's state + arena bytes where the emulator is not available."""
    from mgrade_edge.convert.codegen import generate
    from mgrade_edge.convert.resources import measure

    try:
        r = measure(model_bytes, generate, x_q, paths=("fast",))
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        return {"cost_source": f"estimate (no emulator measurement: {str(e).splitlines()[0]})",
                "instructions_per_step": None, "ram_bytes": None}
    paths = r.get("paths") or {}
    ips = {k: (p["instructions_per_step"] or {}).get("mean") for k, p in paths.items()}
    ram = {k: p["ram"]["total"] for k, p in paths.items()}
    src = (f"qemu-cm4 -icount, {r['steps_measured']} steps" if all(ips.values()) and ips
           else f"estimate: {r.get('missing') or 'no instruction count'}")
    return {"cost_source": src, "macs_per_step": r["macs_per_step"],
            "instructions_per_step": ips or None,
            "ram_bytes": ram or {"package": r["state_bytes"] + r["arena_bytes"]}}


def choose(raw: bytes, spec, info: dict, data, val_n: int, float_val_acc: float | None = None,
           gate_bits: int = 16, input_bits: int = 16, measure_cost: bool = True):
    """(model bytes, report fields) of the rule in the module doc."""
    rungs: dict[str, tuple[bytes, dict]] = {}
    for f in forms.available(spec):          # the distinct forms, cheapest first
        m, extra = forms.build(raw, spec, info, f, gate_bits, note=say, input_bits=input_bits)
        rungs.setdefault(forms.name_of(extra), (m, extra))
    order = list(rungs)
    today16 = forms.name_of(forms.build(raw, spec, info, "input16", gate_bits, note=lambda s: None,
                                        input_bits=input_bits)[1])
    xv, yv, lv, split = val_split(data, val_n)
    streamer = Streamer(rungs["int8"][0], "tflm")
    xq = streamer.quantize_input(xv.numpy())
    x_cost = cost_sequence(streamer, data, xq)
    acc: dict[str, float | None] = {}

    def evaluated(name: str) -> float | None:
        if name not in acc:
            acc[name] = val_accuracy(rungs[name][0], xq, yv, data.readout, lv)
        return acc[name]

    a8, a16 = evaluated("int8"), evaluated(today16)
    chosen = today16 if None not in (a8, a16) and a16 > a8 else "int8"
    bound = None if float_val_acc is None else float_val_acc - BOUND_POINTS / 100
    if bound is not None and (acc[chosen] or 0.0) >= bound - 1e-12:
        # within the bound: a cheaper 16-bit-state rung that is too (state16 for input16)
        k16 = order.index(chosen)
        chosen = next((f for f in order[1:k16] if (evaluated(f) or 0.0) >= bound - 1e-12),
                      chosen) if chosen != "int8" else chosen
    elif bound is not None:           # the earlier choice misses the bound: every rung
        for f in order:
            evaluated(f)
        chosen = next((f for f in order if (acc[f] or 0.0) >= bound - 1e-12), None)
        if chosen is None:            # none within the bound: the most accurate
            chosen = max(acc, key=lambda f: ((acc[f] or 0.0), -order.index(f)))
    k = order.index(chosen)
    below = order[k - 1] if k > 0 else None
    if below is not None:
        evaluated(below)
    tried = []
    for f in order:
        if f not in acc:
            continue
        row = {"form": f, "widened": forms.WIDENED[f], "val_acc": acc[f]}
        if measure_cost:
            row.update(cost(rungs[f][0], x_cost))
        tried.append(row)
    model, extra = rungs[chosen]
    fields = {**extra, "state_bits_choice": "auto", "state_bits_split": split,
              "val_n": int(len(xq)), "val_acc_tflm_state8": acc["int8"],
              "val_acc_tflm_state16": acc[today16], "form": chosen, "form_choice": "auto",
              "float_val_acc": float_val_acc, "form_bound_points": BOUND_POINTS,
              "form_next_cheaper": below, "forms_tried": tried,
              NEXT_MODEL: None if below is None else rungs[below][0]}
    if extra.get("state_bits") != 16:
        fields = {k: v for k, v in fields.items()
                  if k not in ("gate_bits", "input_bits", "input8_layers")}
    say(table(fields))
    return model, fields


def next_cheaper_accuracy(fields: dict, x_q: np.ndarray, y: np.ndarray, readout: str,
                          lengths) -> dict:
    """Pops choose's next-cheaper model from `fields`; its accuracy on x_q (convert's test
    split, host C package) as report.json's form_next_cheaper_test_acc."""
    model = fields.pop(NEXT_MODEL, None)
    if model is None:
        return {}
    return {"form_next_cheaper_test_acc": val_accuracy(model, x_q, y, readout, lengths)}


def _ips(row: dict, path: str) -> str:
    v = (row.get("instructions_per_step") or {}).get(path)
    return "-" if v is None else f"{v:,.0f}"


def table(fields: dict) -> str:
    """The tried forms as one text table (stdout)."""
    fa = fields.get("float_val_acc")
    head = (f"form choice on {fields['val_n']} {fields['state_bits_split']} sequences "
            f"(float {'-' if fa is None else f'{100 * fa:.2f}%'}; keep the cheapest within "
            f"{fields['form_bound_points']} points):")
    lines = [head, f"  {'form':10s} {'val %':>7s} {'vs float':>8s} {'instr/step':>10s} "
                   f"{'RAM B':>6s}  int16"]
    for r in fields["forms_tried"]:
        a = r["val_acc"]
        d = "-" if a is None or fa is None else f"{100 * (a - fa):+.2f}"
        ram = r.get("ram_bytes") or {}
        ram_s = str(ram.get("fast", ram.get("package", "-")))
        mark = " <- chosen" if r["form"] == fields["form"] else ""
        lines.append(f"  {r['form']:10s} {'-' if a is None else f'{100 * a:.2f}':>7s} {d:>8s} "
                     f"{_ips(r, 'fast'):>10s} {ram_s:>6s}  "
                     f"{r['widened']}{mark}")
    src = {r.get("cost_source") for r in fields["forms_tried"] if r.get("cost_source")}
    if src:
        lines.append(f"  (instructions per step on the fast C path: {'; '.join(sorted(src))})")
    return "\n".join(lines)
