"""Stream test sequences to a device and compare its int8 logits with the host's reference.

    mgrade-stream-eval --port socket://127.0.0.1:PORT --model RUN/int8 \
        [--n N] [--baud 115200] [--json OUT] [--reference auto|MODULE:NAME|FILE.py:NAME] [--fast]

DIR (--model) holds model.tflite and test_data.npz (x: int8 [N, T, n_in], already quantized;
y: int64 [N] for the mean readout or [N, T] per step with -100 at unlabeled steps; optional
lengths: int64 [N] for variable-length data, sequence i is x[i, :lengths[i]] and only those
steps are streamed). The device must run the model whose id is the first 8 bytes of
sha256(DIR/model.tflite). When the model's metadata carries class names, the report gives
the accuracy of each class by name.

The host reference is pluggable: a factory called as factory(DIR) that returns an object with
.run(x_int8 [T, n_in]) -> int8 logits [T, n_out] (or such a callable). `auto` (the default)
uses convert.stream.Streamer(model bytes, backend="tflm") (TFLite-Micro, step by step). In
Python: evaluate(..., reference=obj). This tool, the emulator launchers and the default
reference need only numpy, pyserial and tflite-micro (no torch, no TensorFlow).

Exit status: 0 all logits equal, 1 a mismatch between device and host logits (and nothing
else), 2 a user error with one line saying what to do (arguments, DIR, port, no reply to
HELLO, wrong model on the device, a reference that fails, a model whose per-step logits do
not fit the link without --fast, a label that is not a class of the model), 3 a protocol
error or timeout mid-run, 4 an internal error (a bug: the traceback is printed), 130 Ctrl-C
(one line; no --json file). Labels -100 are not counted (a step, or a whole sequence for the
mean readout, as convert counts them); with no labelled step at all the accuracies are
"n/a" (null in --json) and the exit status depends on the logits alone.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

if __name__ == "__main__":        # Ctrl-C while the imports load: one line, exit 130
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("nothing was compared", hard=True)

import numpy as np

from mgrade_edge.host_tools.protocol import (Device, DeviceTimeout, ProtocolError,
                                             check_link_settings)

EXIT_OK, EXIT_MISMATCH, EXIT_USER, EXIT_PROTOCOL, EXIT_INTERNAL = 0, 1, 2, 3, 4
FIRST_HELLO_S = 1.0     # after this long without a HELLO reply, say what may be wrong
HELLO_TIMEOUT_S = 2.0   # per HELLO attempt at most: its reply is small (< 200 bytes)


class UserError(Exception):
    """A problem the user can fix (arguments, files, port, model on the device)."""


# ----------------------------------------------------------------------------- inputs
def model_id(model_dir: Path) -> bytes:
    return hashlib.sha256((Path(model_dir) / "model.tflite").read_bytes()).digest()[:8]


def load_model_dir(model_dir) -> tuple[np.ndarray, np.ndarray, bytes]:
    d = Path(model_dir)
    if not d.is_dir():
        raise UserError(f"model directory not found: {d}")
    for name in ("model.tflite", "test_data.npz"):
        if not (d / name).is_file():
            raise UserError(f"{d} has no {name}")
    try:
        with np.load(d / "test_data.npz") as z:
            x, y = z["x"], z["y"]
    except KeyError as e:
        raise UserError(f"{d / 'test_data.npz'} lacks array {e}") from None
    except Exception as e:   # noqa: BLE001 - a corrupt npz can raise many things
        raise UserError(f"cannot read {d / 'test_data.npz'}: {e}") from None
    if x.dtype != np.int8 or x.ndim != 3:
        raise UserError(f"test_data.npz x must be int8 [N, T, n_in] (already quantized), got "
                        f"{x.dtype} {list(x.shape)}")
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0] or (y.ndim == 2 and y.shape[1] != x.shape[1]):
        raise UserError(f"test_data.npz y must be [N] or [N, T] matching x {list(x.shape)}, got "
                        f"{list(y.shape)}")
    return x, y.astype(np.int64), model_id(d)


def load_lengths(model_dir, x: np.ndarray) -> np.ndarray:
    """Own length of every test sequence (test_data.npz 'lengths', else all T steps)."""
    with np.load(Path(model_dir) / "test_data.npz") as z:
        if "lengths" not in z.files:
            return np.full(x.shape[0], x.shape[1], np.int64)
        lengths = z["lengths"].astype(np.int64)
    if lengths.shape != (x.shape[0],) or lengths.min() < 1 or lengths.max() > x.shape[1]:
        raise UserError(f"test_data.npz lengths must be [N] in 1..{x.shape[1]}, got "
                        f"{list(lengths.shape)}")
    return lengths


def class_names(model_dir) -> list[str] | None:
    """The class names in the model's metadata (user-data tasks), or None."""
    try:
        from mgrade_edge.convert.metadata import read as read_metadata    # flatbuffers only: no TensorFlow
        names = read_metadata((Path(model_dir) / "model.tflite").read_bytes()).get("class_names")
    except Exception:   # noqa: BLE001 - names are optional; a bad model fails elsewhere
        return None
    return [str(n) for n in names] if names else None


# ----------------------------------------------------------------------------- reference
class _RunAdapter:
    def __init__(self, fn):
        self.fn = fn

    def run(self, x):
        return self.fn(x)


def _as_reference(obj):
    if hasattr(obj, "run") and callable(obj.run):
        return obj
    if callable(obj):
        return _RunAdapter(obj)
    raise UserError(f"reference {obj!r} has no run(x) method and is not callable")


def _auto_reference(model_dir: Path):
    """TFLite-Micro step by step (convert.stream: numpy, flatbuffers and tflite-micro only)."""
    try:
        stream = importlib.import_module("mgrade_edge.convert.stream")
        importlib.import_module("tflite_micro")
    except ImportError as e:
        raise UserError(f"the default reference runs TFLite-Micro, which is not importable "
                        f"here ({e}): pip install tflite-micro (the host extra), or run in the "
                        f"project's .venv") from None
    return stream.Streamer((Path(model_dir) / "model.tflite").read_bytes(), backend="tflm")


def load_reference(spec: str, model_dir: Path):
    """'auto', 'package.module:factory' or 'path/to/file.py:factory' -> reference object."""
    if spec == "auto":
        try:
            return _as_reference(_auto_reference(model_dir))
        except UserError:
            raise
        except Exception as e:   # noqa: BLE001 - report, do not dump a traceback
            raise UserError(f"cannot build the host reference for {model_dir}: "
                            f"{type(e).__name__}: {e}") from None
    if ":" not in spec:
        raise UserError(f"--reference must be 'auto', MODULE:NAME or FILE.py:NAME, got {spec!r}")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise UserError(f"reference file not found: {path}")
            mspec = importlib.util.spec_from_file_location(f"_mg_reference_{path.stem}", path)
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as e:
        raise UserError(f"cannot import reference {where!r}: {e}") from None
    if not hasattr(module, name):
        raise UserError(f"reference module {where!r} has no {name!r}")
    try:
        ref = getattr(module, name)(model_dir)
    except Exception as e:   # noqa: BLE001
        raise UserError(f"reference {spec!r} failed for {model_dir}: {type(e).__name__}: {e}") from None
    return _as_reference(ref)


# ----------------------------------------------------------------------------- evaluation
def _progress(total, enabled):
    """A tqdm bar on stderr, only when enabled and stderr is a terminal (redirected to a file
    a bar would write carriage-return frames)."""
    if not enabled or not getattr(sys.stderr, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="seq", file=sys.stderr, leave=False, dynamic_ncols=True)


def reflash_command(board: str, model_dir: Path) -> str:
    """The make command that builds and flashes the firmware of `model_dir` for the board a
    HELLO named ("qemu-cm4 (mps2-an386, ...)" -> BOARD=qemu-cm4): RUN=<run> for convert's
    layout RUN/int8, else MODEL=<folder>."""
    name = board.split()[0] if board.split() else ""
    boards = Path(__file__).resolve().parents[1] / "mcu" / "boards"
    if not name or not (boards / name).is_dir() or name == "host":
        name = "<your board>"
    d = Path(model_dir)
    where = f"RUN={d.parent}" if d.name == "int8" else f"MODEL={d}"
    return f"make firmware flash BOARD={name} {where}"


def evaluate(device: Device, model_dir, reference=None, n: int | None = None,
             step_logits: bool = True, progress: bool = False) -> dict:
    """Stream the first n test sequences through `device` and `reference`; returns the
    metrics dict (see main). Raises UserError / ProtocolError."""
    model_dir = Path(model_dir)
    x, y, expected_id = load_model_dir(model_dir)
    info = device.hello()
    if info.model_id != expected_id:
        raise UserError(f"the device runs model id {info.model_id.hex()} ({info.model_name!r}), "
                        f"but {model_dir / 'model.tflite'} has id {expected_id.hex()}: build and "
                        f"flash this model's firmware: {reflash_command(info.board, model_dir)}")
    if info.n_in != x.shape[2]:
        raise UserError(f"the device model takes n_in={info.n_in}, test_data.npz has "
                        f"{x.shape[2]} channels")
    wrong = (y != -100) & ((y < 0) | (y >= info.n_out))
    if wrong.any():
        raise UserError(f"{model_dir / 'test_data.npz'}: label {int(y[wrong][0])} is not a "
                        f"class of the model (0 .. {info.n_out - 1}, or -100 = unlabelled)")
    ref = _as_reference(reference) if reference is not None else load_reference("auto", model_dir)
    N = x.shape[0] if n is None else max(0, min(int(n), x.shape[0]))
    lengths = load_lengths(model_dir, x)
    names = class_names(model_dir)
    class_correct = np.zeros(max(info.n_out, 1), np.int64)
    class_total = np.zeros(max(info.n_out, 1), np.int64)
    per_step = y.ndim == 2
    step_logits = step_logits or per_step
    if step_logits and 4 + info.n_out > info.max_body:
        fits = f"{info.n_out} logits per step do not fit in a {info.max_body}-byte reply"
        if per_step:
            raise UserError(f"test_data.npz has per-step labels, which need every step's "
                            f"logits, but {fits}: give labels per sequence ([N]) and use --fast")
        raise UserError(f"{fits}: use --fast (step_logits=False) to compare the int32 sums and "
                        f"the last step's logits instead")

    dev_correct = host_correct = agree = labelled = 0
    max_diff = max_sum_diff = 0
    mismatched = []
    costs = []
    steps_total = 0
    bar = _progress(N, progress)
    t0 = time.monotonic()
    try:
        for i in range(N):
            L = int(lengths[i])
            xi, yi = x[i, :L], (y[i, :L] if per_step else y[i])
            res = device.run(xi, step_logits=step_logits)
            try:
                host = np.asarray(ref.run(xi))
            except Exception as e:   # noqa: BLE001 - the user's reference: report, no traceback
                raise UserError(f"the host reference failed on test sequence {i}: "
                                f"{type(e).__name__}: {e}") from None
            if host.shape != (L, info.n_out):
                raise UserError(f"reference returned shape {list(host.shape)}, expected "
                                f"{[L, info.n_out]}")
            host = host.astype(np.int64)
            host_sums = host.sum(axis=0)
            sum_diff = int(np.abs(res.sums - host_sums).max()) if info.n_out else 0
            if step_logits:
                diff = int(np.abs(res.step_logits.astype(np.int64) - host).max())
            else:
                diff = int(np.abs(res.last_logits.astype(np.int64) - host[-1]).max())
            max_diff, max_sum_diff = max(max_diff, diff), max(max_sum_diff, sum_diff)
            if diff or sum_diff:
                mismatched.append(i)
            if per_step:
                mask = yi != -100
                d_pred = np.argmax(res.step_logits, axis=-1)[mask]
                h_pred = np.argmax(host, axis=-1)[mask]
                dev_correct += int((d_pred == yi[mask]).sum())
                host_correct += int((h_pred == yi[mask]).sum())
                agree += int((d_pred == h_pred).sum())
                labelled += int(mask.sum())
                np.add.at(class_total, yi[mask], 1)
                np.add.at(class_correct, yi[mask], (d_pred == yi[mask]).astype(np.int64))
            elif yi != -100:            # an unlabelled sequence is not counted (as convert)
                d_pred, h_pred = int(np.argmax(res.sums)), int(np.argmax(host_sums))
                dev_correct += int(d_pred == yi)
                host_correct += int(h_pred == yi)
                agree += int(d_pred == h_pred)
                labelled += 1
                class_total[yi] += 1
                class_correct[yi] += int(d_pred == yi)
            costs.append(res.cost_per_step)
            steps_total += res.steps
            if bar is not None:
                bar.update(1)
                bar.set_postfix(agree=f"{agree}/{labelled}", maxdiff=max_diff)
    finally:
        if bar is not None:
            bar.close()
    wall = time.monotonic() - t0
    costs = np.asarray(costs, np.float64)
    return {
        "model_dir": str(model_dir),
        "model_id": expected_id.hex(),
        "device": {"board": info.board, "model_name": info.model_name, "n_in": info.n_in,
                   "n_out": info.n_out, "n_macs_per_step": info.n_macs_per_step,
                   "tick_unit": info.tick_kind, "units_per_tick": info.units_per_tick},
        "readout": "per_step" if per_step else "mean",
        "n_sequences": N,
        "steps": steps_total,
        "labelled": labelled,
        "device_accuracy": dev_correct / labelled if labelled else None,   # None: no labels
        "host_accuracy": host_correct / labelled if labelled else None,
        "argmax_agreement": agree / labelled if labelled else None,
        "max_abs_logit_diff": max_diff,
        "logits_compared": "every step" if step_logits else "last step",
        "max_abs_sum_diff": max_sum_diff,
        "mismatched_sequences": mismatched[:50],
        "n_mismatched": len(mismatched),
        "wall_s": wall,
        "sequences_per_s": N / wall if wall > 0 else float("nan"),
        "steps_per_s": steps_total / wall if wall > 0 else float("nan"),
        "cost_unit": info.tick_kind,
        "cost_per_step_mean": float(costs.mean()) if N else float("nan"),
        "cost_per_step_min": float(costs.min()) if N else float("nan"),
        "cost_per_step_max": float(costs.max()) if N else float("nan"),
        "link": dict(device.stats),
        "per_class": ([{"class": k, "name": names[k] if names and k < len(names) else str(k),
                        "device_correct": int(class_correct[k]), "labelled": int(class_total[k])}
                       for k in range(len(class_total)) if class_total[k]]
                      if names else None),
    }


def format_report(m: dict) -> str:
    pct = lambda v: "n/a (no labelled steps)" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    d = m["device"]
    lines = [
        f"device     : {d['board']}, model {d['model_name']!r} id {m['model_id']} "
        f"(n_in {d['n_in']}, n_out {d['n_out']}, {d['n_macs_per_step']} MACs/step)",
        f"sequences  : {m['n_sequences']} ({m['steps']} steps, {m['readout']} readout, "
        f"{m['labelled']} labels)",
        f"device acc : {pct(m['device_accuracy'])}",
        f"host acc   : {pct(m['host_accuracy'])}",
        f"agreement  : {pct(m['argmax_agreement'])} (argmax, device vs host)",
        f"max |diff| : {m['max_abs_logit_diff']} int8 logits ({m['logits_compared']}), "
        f"{m['max_abs_sum_diff']} in the int32 sums (expected 0)",
        f"throughput : {m['sequences_per_s']:.2f} seq/s, {m['steps_per_s']:.0f} steps/s "
        f"({m['wall_s']:.1f} s, link retransmits {m['link'].get('retransmits', 0)})",
        f"device cost: {m['cost_per_step_mean']:.1f} {m['cost_unit']}/step "
        f"(min {m['cost_per_step_min']:.1f}, max {m['cost_per_step_max']:.1f})",
    ]
    if m.get("per_class"):
        lines.append("per class  : " + ", ".join(
            f"{c['name']} {c['device_correct']}/{c['labelled']}" for c in m["per_class"]))
    if m["n_mismatched"]:
        lines.append(f"MISMATCH   : {m['n_mismatched']} sequence(s) differ, first "
                     f"{m['mismatched_sequences'][:10]}")
    return "\n".join(lines)


def write_json(path: Path, m: dict):
    """The metrics as strict JSON (NaN -> null), written atomically."""
    clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in m.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(clean, indent=2, allow_nan=False))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def hello_with_hint(device: Device, port: str):
    """HELLO; after FIRST_HELLO_S without a reply, print on stderr what may be wrong and keep
    trying with the device's retries (attempts of at most HELLO_TIMEOUT_S). No reply at all
    -> UserError."""
    timeout, retries = device.timeout, device.retries
    try:
        device.timeout, device.retries = min(timeout, FIRST_HELLO_S), 0
        try:
            return device.hello()
        except DeviceTimeout:
            print(f"waiting for the device at {port}: no reply to HELLO within "
                  f"{device.timeout:g} s yet (is another program connected to it? QEMU's UART "
                  f"serves one client at a time)", file=sys.stderr, flush=True)
        device.timeout, device.retries = min(timeout, HELLO_TIMEOUT_S), retries
        return device.hello()
    except DeviceTimeout as e:
        raise UserError(f"no reply from the device at {port} ({e}): check that the firmware "
                        f"runs, the port and --baud are right, and that no other program is "
                        f"connected to it (QEMU's UART serves one client at a time)") from None
    finally:
        device.timeout, device.retries = timeout, retries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", required=True, help="serial port or URL (socket://127.0.0.1:PORT, "
                                                  "/dev/ttyUSB0)")
    ap.add_argument("--model", required=True, help="DIR with model.tflite and test_data.npz")
    ap.add_argument("--n", type=int, default=None, help="number of sequences (default: all)")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--json", default=None, help="write the metrics to this file")
    ap.add_argument("--reference", default="auto",
                    help="host reference: auto (convert.stream TFLM), MODULE:NAME or FILE.py:NAME "
                         "(a factory called with DIR)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per request attempt")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--fast", action="store_true",
                    help="mean readout: compare the sums and last-step logits only, do not "
                         "transfer every step's logits")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress bar (there is none anyway when stderr is not a terminal)")
    ap.add_argument("--quiet", action="store_true",
                    help="print only the final report (and errors)")
    args = ap.parse_args(argv)
    from mgrade_edge.training.console import require
    require("serial", command="host_tools/stream_eval.py")   # pyserial

    try:
        if args.n is not None and args.n < 1:
            raise UserError("--n must be >= 1")
        try:
            check_link_settings(args.timeout, args.retries)
        except ValueError as e:
            raise UserError(f"--{e}") from None
        if args.baud < 1:
            raise UserError(f"--baud must be > 0, got {args.baud}")
        load_model_dir(args.model)                    # fail on a bad DIR before opening the port
        reference = load_reference(args.reference, Path(args.model))
        try:
            device = Device.open(args.port, baud=args.baud, timeout=args.timeout,
                                 retries=args.retries)
        except ProtocolError as e:
            raise UserError(str(e)) from None
        with device:
            hello_with_hint(device, args.port)
            m = evaluate(device, args.model, reference=reference, n=args.n,
                         step_logits=not args.fast,
                         progress=not (args.no_progress or args.quiet))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
    except ProtocolError as e:
        print(f"error: protocol failure talking to {args.port}: {e}", file=sys.stderr)
        return EXIT_PROTOCOL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:   # noqa: BLE001 - a bug: never let it look like a mismatch (exit 1)
        traceback.print_exc()
        print("error: internal error in the host tools (a bug; see the traceback above)",
              file=sys.stderr)
        return EXIT_INTERNAL
    print(format_report(m))
    if args.json:
        write_json(Path(args.json), m)
    # decided by the logits (equal logits give equal argmaxes; with no labels there is no
    # agreement figure to check)
    ok = m["max_abs_logit_diff"] == 0 and m["max_abs_sum_diff"] == 0 and not m["n_mismatched"]
    if not ok:
        print("error: device and host logits differ", file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_OK


if __name__ == "__main__":
    exit_on_interrupt("stopped before the comparison ended; no report written")
    sys.exit(main())
