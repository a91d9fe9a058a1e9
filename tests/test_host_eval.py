"""convert/host_eval.py: the generated C package compiled for the host, many sequences per
call, against TFLite-Micro stepping (convert.stream.Streamer) on the tiny random models:
every step's int8 logits identical, variable lengths included; a corrupted package or
corrupted logits are caught by the cross-check; without gcc TFLite-Micro steps every
sequence; convert's accuracy helpers give what TFLite-Micro stepping gives."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from mgrade_edge.convert import host_eval
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.stream import Streamer, predictions

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]


def ragged(model_dir, n: int = 12, seed: int = 0):
    """(model bytes, int8 x [n, T, n_in], lengths [n]): the tiny model's test sequences
    cycled to n, lengths 0, 1, T and random in between."""
    with np.load(model_dir / "test_data.npz") as z:
        x = z["x"].astype(np.int8)
    x = np.ascontiguousarray(x[np.arange(n) % len(x)])
    T = x.shape[1]
    lengths = np.random.default_rng(seed).integers(2, T, n).astype(np.int32)
    lengths[:3] = [T, 0, 1]
    return (model_dir / "model.tflite").read_bytes(), x, lengths


def tflm_reference(model_bytes, x, lengths):
    """Every step's logits from TFLite-Micro stepping, zero-padded to T."""
    s, T = Streamer(model_bytes, "tflm"), x.shape[1]
    out = np.zeros((len(x), T, s.meta["n_classes"]), np.int8)
    for i, L in enumerate(lengths):
        if L:
            out[i, :L] = s.run(x[i, :L])
    return out


@pytest.fixture(scope="module", params=["tiny", "tiny16u", "mean"])
def model_dir(request, tiny_models):
    """The default tiny model; with the int16 state, gate and minGRU input (convert's
    default on long sequences); a mean-readout one with a wider, longer span."""
    from tests.tiny_model import TinyConfig

    return tiny_models({"tiny": TinyConfig(),
                        "tiny16u": TinyConfig(state_bits=16, seed=6, input_bits=16),
                        "mean": TinyConfig(H=16, L=1, K=24, N=4, readout="mean", seed=1)}
                       [request.param])


def test_host_batch_equals_tflm_on_every_step(model_dir, tmp_path):
    model_bytes, x, lengths = ragged(model_dir)
    ref = tflm_reference(model_bytes, x, lengths)
    lib = host_eval.build(model_bytes, tmp_path)          # one build for both thread counts
    host = host_eval.HostModel(model_bytes, lib, threads=3)    # 12 sequences over 3 copies
    got = host.run(x, lengths)
    single = tmp_path / "single" / lib.name                # its own path: its own statics
    single.parent.mkdir()
    shutil.copyfile(lib, single)
    np.testing.assert_array_equal(host_eval.HostModel(model_bytes, single, threads=1)
                                  .run(x, lengths), ref)
    assert got.dtype == np.int8 and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    assert np.abs(ref.astype(int)).sum() > 0           # a real comparison, not zeros
    full = host.run(x)                                  # no lengths: every step
    np.testing.assert_array_equal(full[0], ref[0])
    assert host_eval.cross_check(Streamer(model_bytes, "tflm"), x, lengths, got, n=len(x)) \
        == len(x)


def test_int8_logits_cross_checks_and_says_how(model_dir):
    model_bytes, x, lengths = ragged(model_dir, n=6, seed=1)
    logits, how = host_eval.int8_logits(model_bytes, x, lengths)
    assert how == "host-c"
    np.testing.assert_array_equal(logits, tflm_reference(model_bytes, x, lengths))


def corrupt_weights(gen) -> int:
    """Corrupt every weight array of a generated package in place: negate each int8 array of
    16 or more entries in mg_model_data.c (the portable path's weights) and flip one bit of
    every byte of the fast path's packed uint32 weights (mg_model.c *_w); the arrays touched."""
    def negate(m):
        vals = [min(127, -int(v)) for v in re.findall(r"-?\d+", m.group(2))]
        return m.group(1) + ", ".join(map(str, vals)) + m.group(3)

    def flip(m):
        vals = [f"0x{int(v, 16) ^ 0x01010101:08x}u" for v in re.findall(r"0x([0-9a-f]+)u",
                                                                          m.group(2))]
        return m.group(1) + ", ".join(vals) + m.group(3)
    data, model = gen / "mg_model_data.c", gen / "mg_model.c"
    text, n8 = re.subn(r"(const int8_t \w+\[(?:1[6-9]|[2-9]\d|\d{3,})\] = \{)([^}]*)(\})",
                       negate, data.read_text())
    data.write_text(text)
    text, n32 = re.subn(r"(const uint32_t \w+_w\[\d+\] = \{)([^}]*)(\})", flip,
                        model.read_text())
    model.write_text(text)
    return n8 + n32


def test_a_corrupted_package_is_caught_by_the_cross_check(tiny_int8, tmp_path):
    from mgrade_edge.convert.codegen import generate

    model_bytes, x, lengths = ragged(tiny_int8, n=6)
    gen = tmp_path / "gen"
    generate(model_bytes, gen)
    assert corrupt_weights(gen) > 0
    bad = host_eval.HostModel(model_bytes, host_eval.compile_package(gen, tmp_path))
    logits = bad.run(x, lengths)
    with pytest.raises(ConvertError, match="differs from TFLite-Micro on sequence 0, step"):
        host_eval.cross_check(Streamer(model_bytes, "tflm"), x, lengths, logits)


def test_convert_int8_eval_rejects_host_logits_that_differ(tiny_int8):
    """convert's test-split evaluation: TFLite-Micro on the first sequences must match the
    host logits byte for byte; one flipped logit in a checked sequence is an error, and the
    accuracies from untouched host logits equal those of stepping TFLite-Micro everywhere."""
    from mgrade_edge.convert.__main__ import int8_eval

    model_bytes, x, lengths = ragged(tiny_int8, n=8)
    lengths[1] = 5                       # convert's test sequences have at least one step
    streamers = {b: Streamer(model_bytes, b) for b in ("tflm", "litert")}
    ref = tflm_reference(model_bytes, x, lengths)
    T = x.shape[1]
    y = np.where(np.arange(T)[None] < lengths[:, None],
                 np.argmax(ref, -1) ^ (np.arange(T)[None] % 2), -100)   # half right
    float_pred = np.argmax(ref, -1)
    slow = int8_eval(streamers, x, y, "per_step", float_pred, lengths)
    fast = int8_eval(streamers, x, y, "per_step", float_pred, lengths,
                     host_eval.HostModel(model_bytes).run(x, lengths), n_check=3)
    for k in ("int8_acc_tflm", "int8_acc_litert", "argmax_agreement_tflm_vs_hardened",
              "streamed_max_abs_diff_litert_vs_tflm"):
        assert fast[k] == slow[k], k
    assert 0 < fast["int8_acc_tflm"] < 1
    assert (fast["int8_eval_tflm"], fast["int8_eval_tflm_checked"]) == ("host-c", 3)
    bad = ref.copy()
    bad[2, 0, 0] ^= 1                    # sequence 2 (length 1) is among the 3 checked
    with pytest.raises(ConvertError, match="sequence 2, step 0"):
        int8_eval(streamers, x, y, "per_step", float_pred, lengths, bad, n_check=3)


def test_val_accuracy_equals_tflm_stepping(model_dir):
    """convert's --state-bits auto validation accuracy (host C) == TFLite-Micro stepping."""
    from mgrade_edge.convert.__main__ import val_accuracy

    model_bytes, x, lengths = ragged(model_dir, n=10, seed=2)
    s, T = Streamer(model_bytes, "tflm"), x.shape[1]
    readout = s.meta["readout"]
    ref = tflm_reference(model_bytes, x, lengths)
    if readout == "mean":
        y = np.array([predictions(r, "mean") for r in ref]) ^ (np.arange(len(x)) % 2)
        want = float(np.mean([predictions(ref[i, :L], "mean") == y[i]
                              for i, L in enumerate(lengths)]))
    else:
        y = np.where(np.arange(T)[None] < lengths[:, None],
                     np.argmax(ref, -1) ^ (np.arange(T)[None] % 3 == 0), -100)
        hits = [(predictions(s.run(x[i, :L]), "per_step") == y[i, :L]).sum()
                for i, L in enumerate(lengths) if L]
        want = float(sum(hits) / (y != -100).sum())
    assert 0 < want < 1
    assert val_accuracy(model_bytes, x, y, readout, lengths) == pytest.approx(want, abs=1e-12)


def test_without_gcc_tflm_steps_every_sequence_with_one_note(tiny_int8, monkeypatch):
    model_bytes, x, lengths = ragged(tiny_int8, n=5)
    monkeypatch.setattr(host_eval, "CC", "no-such-gcc-mg")
    notes = []
    logits, how = host_eval.int8_logits(model_bytes, x, lengths, note=notes.append)
    assert how == "tflm" and len(notes) == 1 and "no-such-gcc-mg not found" in notes[0]
    np.testing.assert_array_equal(logits, tflm_reference(model_bytes, x, lengths))


def test_bad_input_is_one_clear_error(tiny_int8):
    model_bytes, x, lengths = ragged(tiny_int8, n=3)
    host = host_eval.HostModel(model_bytes)
    with pytest.raises(ConvertError, match="expected int8"):
        host.run(x.astype(np.int16), lengths)
    with pytest.raises(ConvertError, match="outside"):
        host.run(x, np.array([1, 2, x.shape[1] + 1], np.int32))


def test_speed_benchmark_runs_both_side_by_side(tiny_int8, tmp_path, capsys):
    import json

    from benchmarks import int8_eval_speed

    out = tmp_path / "speed.json"
    assert int8_eval_speed.main([str(tiny_int8), "--n", "20", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TFLite-Micro stepping" in text and "host C batch" in text and "identical" in text
    r = json.loads(out.read_text())
    assert r["n"] == r["tflm_n"] == 20 and r["identical"] and r["speedup"] > 0
    assert int8_eval_speed.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
