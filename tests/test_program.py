"""The step program (convert/program.py build_program, convert/steps.py) on every tiny model
shape and every deployable form: it partitions the graph's operators into steps in graph
order, carries each form's widths, the graph's MACs and the training ring layout.

The program's arithmetic is checked where it is used: every package test
(tests/test_mcu_model.py, test_state16.py, test_input16.py, test_ladder.py) compiles the C
package written from it and compares it with TFLite-Micro bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from mgrade_edge.convert.metadata import from_model
from mgrade_edge.convert.program import build_program
from mgrade_edge.convert.steps import DelayStep, MinGRUStep, OpStep
from mgrade_edge.convert.tflite_reader import read_tflite
from mgrade_edge.training import ring_layout
from tests.tiny_model import CONFIGS

# form -> the widening functions of convert/widen.py it applies, and the widths each
# minGRU layer's step must carry: (state_bits, gate_bits, input_bits, conv_bits)
FORMS = {
    "int8": ([], (8, 8, 8, 8)),
    "state16_gate8": (["state8gate"], (16, 8, 8, 8)),
    "state16": (["state"], (16, 16, 8, 8)),
    "input16": (["state", "input"], (16, 16, 16, 8)),
    "conv16": (["state", "input", "conv"], (16, 16, 16, 16)),
    "conv_mlp16": (["state", "input", "conv", "mlp"], (16, 16, 16, 16)),
}


def _widened(model8: bytes, steps: list[str]) -> bytes:
    from mgrade_edge.convert.quantize import read_metadata
    from mgrade_edge.convert.widen import widen_conv, widen_input, widen_mlp, widen_state

    layers = read_metadata(model8)["layers"]
    m = model8
    for s in steps:
        m = {"state8gate": lambda b: widen_state(b, layers, gate16=False),
             "state": lambda b: widen_state(b, layers, gate16=True),
             "input": lambda b: widen_input(b, layers),
             "conv": widen_conv, "mlp": widen_mlp}[s](m)
    return m


def _program(model_bytes: bytes):
    model = read_tflite(model_bytes)
    return model, build_program(model, from_model(model))


def _graph_macs(model) -> int:
    """MACs of the graph's FULLY_CONNECTED and DEPTHWISE_CONV_2D ops from tensor shapes
    alone (weights [out, in]; depthwise: output elements x filter taps)."""
    total = 0
    for op in model.operators:
        w = model.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
        if op.op == "FULLY_CONNECTED":
            total += int(np.prod(w.shape))
        elif op.op == "DEPTHWISE_CONV_2D":
            total += model.tensors[op.outputs[0]].size * int(w.shape[1] * w.shape[2])
    return total


def _check_partition(model, program) -> None:
    """Every graph operator belongs to exactly one step; the steps follow the graph order
    (a fused step stands at its anchor, one of its own operators)."""
    owner: dict[int, int] = {}
    positions = []
    for k, step in enumerate(program.steps):
        ops = [step.op.index] if isinstance(step, OpStep) else step.ops
        if not isinstance(step, OpStep):
            assert step.anchor in ops
        for i in ops:
            assert i not in owner, f"operator {i} in steps {owner[i]} and {k}"
            owner[i] = k
        positions.append(step.op.index if isinstance(step, OpStep) else step.anchor)
    assert sorted(owner) == [op.index for op in model.operators]
    assert positions == sorted(positions)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
def test_the_program_of_every_shape(tiny_models, cfg):
    """Each tiny shape (delay conv + minGRU, odd H with a ring-less layer, conv only, minGRU
    only, delays past 255): one DelayStep per conv layer, one MinGRUStep per minGRU layer, the
    graph partitioned, the graph's MACs, the training ring layout, int8 widths."""
    model_bytes = (tiny_models(cfg) / "model.tflite").read_bytes()
    model, program = _program(model_bytes)
    meta = program.step_meta
    _check_partition(model, program)
    assert program.macs == _graph_macs(model)
    assert [d.layer for d in program.delays] == [i for i, lm in enumerate(meta.layers)
                                                 if lm.conv]
    assert [g.layer for g in program.grus] == [i for i, lm in enumerate(meta.layers) if lm.rnn]
    for d in program.delays:
        delays = meta.layers[d.layer].delay_array
        np.testing.assert_array_equal(d.delays, delays)
        np.testing.assert_array_equal(d.ring.ring_len, ring_layout.channel_lengths(delays))
        assert list(d.ring.offsets) == list(ring_layout.offsets(d.ring.ring_len))
        assert d.ring.graph_frames == meta.layers[d.layer].ring_frames
        assert d.conv_bits == 8 and d.dw is not None
    assert program.period == ring_layout.wrap_period(
        v for d in program.delays for v in d.ring.ring_len)
    for g in program.grus:
        assert (g.state_bits, g.gate_bits, g.input_bits) == (8, 8, 8)
        assert g.h8 == g.hnew and g.sub is not None and g.sig_z is not None


@pytest.mark.parametrize("form", list(FORMS))
def test_the_program_of_every_form(tiny_int8, form):
    """The same model in each deployable form: each minGRU step carries the form's state,
    gate and input widths and each delay step its conv width, with the parts the kernels
    read (an int16 tail instead of the int8 update, the 16x8 front instead of int8 FCs); the
    graph is still partitioned and its MACs unchanged (QUANTIZE ops add none)."""
    widen, (state, gate, inp, conv) = FORMS[form]
    model8 = (tiny_int8 / "model.tflite").read_bytes()
    model, program = _program(_widened(model8, widen))
    _check_partition(model, program)
    assert program.macs == _graph_macs(model) == _program(model8)[1].macs
    for g in program.grus:
        assert (g.state_bits, g.gate_bits, g.input_bits) == (state, gate, inp)
        assert (g.tail16 is None) == (state == 8) and (g.front16 is None) == (inp == 8)
        assert (g.sub is None) == (state == 16)                # the tail updates the state
        assert (g.sig_z is None) == (gate == 16)               # the tail's int16 LOGISTIC
        assert model.tensors[g.h8].dtype == np.int8
        assert model.tensors[g.hnew].dtype == (np.int16 if state == 16 else np.int8)
        assert (g.v8 is not None) == (inp == 16)
    for d in program.delays:
        assert d.conv_bits == conv and (d.dw is None) == (conv == 16)
    wide = [s for s in program.steps if isinstance(s, OpStep) and s.wide]
    assert bool(wide) == (form == "conv_mlp16")     # only the MLP's int16 ops stay generic
    kinds = {type(s) for s in program.steps}
    assert {DelayStep, MinGRUStep, OpStep} <= kinds
