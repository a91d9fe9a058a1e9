"""The step program's records: what one mGRADE model runs per frame, as fused, parameterised
steps, each with TFLite-Micro-exact integer parameters, its buffers and its MAC count.

Built once from the .tflite as written (int16 parts included) by convert/program.py; every
writer (the C package's two paths, the resource table, the memory figures) reads these
records and nothing else about the graph's shape. Tensors are indices into the model's tensor
list; parameter dicts are convert/tflm_params.py's typed records (op_params) or the int16
ones of convert/state16.py / convert/input16.py.

    DelayStep    the delay convolution of one layer: ring gather + tap convolution, int8 or
                 (conv16) int16 output
    MinGRUStep   the minGRU of one layer: gate, candidate g(p), state update; state, gate
                 and input int8 or int16 (state_bits, gate_bits, input_bits)
    OpStep       any other operator of the graph (FC of the MLP and readout, ADD, MUL, ...)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from mgrade_edge.convert.metadata import StepMetadata
from mgrade_edge.convert.tflite_reader import Model, Operator


@dataclass(frozen=True)
class RingLayout:
    """One delay layer's trimmed ring (training/ring_layout.py): channel c keeps
    `ring_len[c]` past frames at byte `offsets[c]`; `graph_frames` is R of the graph's ring
    input (R * H bytes there), `plain_frames` the frames a plain (unpacked) ring would keep."""
    ring_len: np.ndarray          # [H] R_c
    offsets: list                 # [H] byte offset of channel c's frames
    graph_frames: int             # R (0: no ring, every delay 0)
    plain_frames: int
    kernel_span: int | None
    channels: int

    @property
    def bytes(self) -> int:
        return int(self.ring_len.sum())

    @property
    def graph_bytes(self) -> int:
        return self.graph_frames * self.channels

    @property
    def plain_bytes(self) -> int:
        return self.plain_frames * self.channels


@dataclass
class DelayStep:
    """Layer `layer`'s delay convolution: y[c] = sum_e filter[e, c] * ring frame
    (t - delays[c, e]) of channel c, requantized (int8, `dw`: the DEPTHWISE_CONV_2D's
    op_params) or, with conv16, the taps requantized to int16 and a 16x8 depthwise conv with an
    int64 bias (`conv16`: input16's dw16 parameters) into the step's int16 scratch."""
    layer: int
    ops: list[int]                # the graph's operator indices this step replaces
    anchor: int                   # the op position the step takes in the operator order
    frame: int                    # tensor: the layer input at t (written into the ring)
    out: int                      # tensor: the int8 conv output (conv16: the int16 one)
    delays: np.ndarray            # [H, N] integer delays in frames
    filt: int                     # filter tensor [1, 1, N, H] int8
    bias: int                     # bias tensor (int32; conv16 int64) or -1
    dw: dict | None               # int8 DEPTHWISE_CONV_2D op_params (None: conv16)
    conv16: dict | None           # int16 output: taps16 requantization, multipliers, range
    ring: RingLayout
    zero_point: int               # of the frames (the ring's reset value)
    frame_output: bool            # the graph outputs the frame (frame{l}, ring_frames > 0)
    macs: int

    @property
    def conv_bits(self) -> int:
        return 16 if self.conv16 is not None else 8

    @property
    def ring_len(self) -> np.ndarray:
        return self.ring.ring_len


@dataclass
class Front16:
    """The int16 minGRU input of a layer (convert/input16.py match_front): u16 = frame16 +
    conv16 (int16 sum of the requantized frame and conv output), its 16x8 FCs, the int8
    candidate outputs and the residual v8 = requant(u16 + h16'). params / tensors as
    match_front returns them."""
    params: dict
    tensors: dict


@dataclass
class Tail16:
    """The int16 minGRU state update of a layer (convert/state16.py match_tail): params and
    tensors as match_tail returns them (gate_int16, gate_fc16 say the gate's form)."""
    params: dict
    tensors: dict


@dataclass
class MinGRUStep:
    """Layer `layer`'s minGRU: z = sigmoid(FC_z(u)), p = FC_h(u), g = RELU-part(p) +
    sigmoid(min(p, c)), h' = h + z (g - h); the state updated in place.

    `fc`: role -> (FC op, op_params) for gate, cand and relu_fc (where the graph has a
    separate RELU FC; the 16x8 FCs with an int16 input). The int8 candidate part (sig_p,
    min_const, relu, add_g) is always there; sig_z only with an int8 gate read as int8 (an int16
    gate is the tail's LOGISTIC); sub/mul/add_h only with an int8 state (the tail's otherwise)."""
    layer: int
    ops: list[int]
    anchor: int
    u: int                        # the int8 input u (int16 input: the front's u16 tensor)
    h: int                        # state input tensor (int8 or int16)
    hnew: int                     # state output tensor (int8 or int16)
    h8: int                       # the int8 state the residual reads (hnew, or its int8 copy)
    v8: int | None                # int16 input: the residual output this step writes
    zero_point: int               # of h8 (the int8 state's reset value)
    fc: dict
    sig_z: dict | None
    sig_p: dict
    min_const: int                # const tensor of the MINIMUM (size 1 or H)
    relu: dict | None             # RELU's requantization (None: fused into the relu FC)
    shares_dot: bool              # the relu FC has the candidate's weights: one dot product
    add_g: dict
    sub: dict | None
    mul: dict | None
    add_h: dict | None
    tail16: Tail16 | None
    front16: Front16 | None
    macs: int

    @property
    def state_bits(self) -> int:
        return 16 if self.tail16 is not None else 8

    @property
    def gate_bits(self) -> int:
        return 16 if self.tail16 is not None and self.tail16.tensors["gate_int16"] else 8

    @property
    def input_bits(self) -> int:
        return 16 if self.front16 is not None else 8


@dataclass
class OpStep:
    """Any other operator, run by the generic kernels: `params` its op_params (int8) or
    convert/ops16.py's (wide: an int16 tensor)."""
    op: Operator
    params: dict
    wide: bool
    macs: int


@dataclass
class StepProgram:
    """The model's step: `steps` in execution order, the x input and logits output tensors
    (int8 [1, n_in] / [1, n_out]), H channels, the step counter's wrap period (0: 2^32)."""
    model: Model
    meta: dict
    step_meta: StepMetadata
    steps: list
    x: int
    logits: int
    channels: int
    n_in: int
    n_out: int
    period: int
    state_names: list[str] = field(default_factory=list)   # graph state outputs, in order

    @property
    def delays(self) -> list[DelayStep]:
        return [s for s in self.steps if isinstance(s, DelayStep)]

    @property
    def grus(self) -> list[MinGRUStep]:
        return [s for s in self.steps if isinstance(s, MinGRUStep)]

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.steps)

    @cached_property
    def op_steps(self) -> dict[int, OpStep]:
        """graph operator index -> its OpStep (the operators no fused step replaces)."""
        return {s.op.index: s for s in self.steps if isinstance(s, OpStep)}

    def gru(self, layer: int) -> MinGRUStep | None:
        return next((s for s in self.grus if s.layer == layer), None)
