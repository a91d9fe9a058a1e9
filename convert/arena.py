"""Static tensor arena planned offline: where each tensor of a graph lives.

Every tensor gets a `Loc`: a constant, a caller-owned graph input/output slot, or an offset in
one static arena whose buffers are shared by tensors with disjoint lifetimes (greedy, largest
first, ALIGN-byte aligned). Aliasing ops (RESHAPE, SQUEEZE, EXPAND_DIMS) share their input's
buffer. Used by the generic graph package, the mGRADE package and the MicroPython package.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mgrade_edge.convert.tflite_reader import Model
from mgrade_edge.convert.tflm_params import ALIAS_OPS, CodegenError

ALIGN = 4            # arena offset alignment in bytes


@dataclass
class Loc:
    """Where one tensor lives."""
    kind: str            # "const" | "input" | "output" | "arena"
    index: int = 0       # input/output slot, or arena buffer id
    offset: int = 0      # arena offset (filled by the planner)


@dataclass
class Plan:
    """A graph's memory plan: every touched tensor's Loc, the arena size in bytes, the arena
    buffers (tensors sharing each, offset, bytes, first/last op) and the graph outputs that
    are a graph input or a constant (copied after the ops)."""
    loc: dict[int, Loc]                      # tensor index -> location
    arena_bytes: int
    buffers: list[dict] = field(default_factory=list)   # arena buffers (for the report)
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src tensor, output slot)


def _graph_slots(model: Model) -> tuple[dict[int, int], dict[int, int]]:
    """(tensor -> graph input slot, tensor -> graph output slot); CodegenError for a tensor
    listed twice as an output."""
    out_slot = {}
    for k, ti in enumerate(model.outputs):
        if ti in out_slot:
            raise CodegenError(f"tensor {ti} is listed twice as a graph output")
        out_slot[ti] = k
    return {ti: k for k, ti in enumerate(model.inputs)}, out_slot


def _alias_root(model: Model, out_slot: dict[int, int]):
    """root(tensor) -> the tensor whose buffer it shares: an aliasing op's output shares its
    input's (unless the output is a graph output), transitively; other tensors are their own."""
    parent: dict[int, int] = {}

    def root(ti: int) -> int:
        while parent.get(ti, ti) != ti:
            ti = parent[ti]
        return ti

    for op in model.operators:
        if op.op in ALIAS_OPS:
            src, dst = op.inputs[0], op.outputs[0]
            if dst not in out_slot:
                parent[dst] = root(src)
    return root


@dataclass
class _Lifetimes:
    """Per arena buffer (its root tensor): the first and last op index that touches it and
    the tensors that share it."""
    first: dict[int, int] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)
    members: dict[int, list[int]] = field(default_factory=dict)


def _lifetimes(model: Model, root, in_slot: dict, out_slot: dict) -> _Lifetimes:
    """The lifetimes of the tensors that live in the arena (not constants, not graph I/O)."""
    life = _Lifetimes()
    for op in model.operators:
        for ti in op.outputs + [i for i in op.inputs if i >= 0]:
            r = root(ti)
            if model.tensors[r].is_const or r in in_slot or r in out_slot:
                continue
            life.first[r] = min(life.first.get(r, op.index), op.index)
            life.last[r] = max(life.last.get(r, op.index), op.index)
            life.members.setdefault(r, [])
            if ti not in life.members[r]:
                life.members[r].append(ti)
    return life


def _place(tensors, life: _Lifetimes, align: int) -> tuple[dict[int, int], int]:
    """(root -> arena offset in bytes, arena bytes): largest buffer first (ties: earlier
    first use, lower index), each at the lowest `align`-aligned offset that overlaps no placed
    buffer alive at the same time."""
    def round_up(n):
        return (n + align - 1) // align * align

    order = sorted(life.first, key=lambda r: (-tensors[r].nbytes, life.first[r], r))
    placed: list[tuple[int, int, int, int]] = []   # (offset, size, first, last)
    offsets = {}
    for r in order:
        size = round_up(max(tensors[r].nbytes, 1))
        first, last = life.first[r], life.last[r]
        conflicts = sorted((o, s) for (o, s, f, l) in placed if not (l < first or last < f))
        offset = 0
        for o, s in conflicts:
            if offset + size <= o:
                break
            offset = max(offset, round_up(o + s))
        placed.append((offset, size, first, last))
        offsets[r] = offset
    return offsets, max((o + s for o, s, _, _ in placed), default=0)


def _location(ti: int, r: int, tensors, in_slot: dict, out_slot: dict,
              offsets: dict) -> Loc | None:
    """Tensor ti's Loc (r: its alias root); None for a tensor no operator touches."""
    if tensors[r].is_const:
        return Loc("const", r)
    if r in in_slot:
        return Loc("input", in_slot[r])
    if ti in out_slot:
        return Loc("output", out_slot[ti])
    if r in out_slot:
        return Loc("output", out_slot[r])
    if r in offsets:
        return Loc("arena", 0, offsets[r])
    return None


def plan_memory(model: Model, align: int = ALIGN) -> Plan:
    """The locations of all tensors of `model` and the arena size in bytes (offsets and sizes
    multiples of `align` bytes)."""
    tensors = model.tensors
    in_slot, out_slot = _graph_slots(model)
    root = _alias_root(model, out_slot)
    copies = [(ti, out_slot[ti]) for ti in model.outputs
              if ti in in_slot or tensors[ti].is_const]
    life = _lifetimes(model, root, in_slot, out_slot)
    offsets, arena_bytes = _place(tensors, life, align)
    buffers = [{"tensors": life.members[r], "offset": offsets[r], "bytes": tensors[r].nbytes,
                "first_op": life.first[r], "last_op": life.last[r]}
               for r in sorted(offsets, key=lambda r: (offsets[r], life.first[r]))]
    loc = {}
    for t in tensors:
        where = _location(t.index, root(t.index), tensors, in_slot, out_slot, offsets)
        if where is not None:
            loc[t.index] = where
    return Plan(loc, arena_bytes, buffers, copies)
