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
    kind: str            # "const" | "input" | "output" | "arena"
    index: int = 0       # input/output slot, or arena buffer id
    offset: int = 0      # arena offset (filled by the planner)


@dataclass
class Plan:
    loc: dict[int, Loc]                      # tensor index -> location
    arena_bytes: int
    buffers: list[dict] = field(default_factory=list)   # arena buffers (for the report)
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src tensor, output slot)



def plan_memory(model: Model, align: int = ALIGN) -> Plan:
    """The locations of all tensors of `model` and the arena size in bytes."""
    tensors, ops = model.tensors, model.operators
    out_slot = {}
    for k, ti in enumerate(model.outputs):
        if ti in out_slot:
            raise CodegenError(f"tensor {ti} is listed twice as a graph output")
        out_slot[ti] = k
    in_slot = {ti: k for k, ti in enumerate(model.inputs)}

    # union-find for aliasing ops
    parent: dict[int, int] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    producer = {}
    for op in ops:
        for o in op.outputs:
            producer[o] = op.index
    for op in ops:
        if op.op in ALIAS_OPS:
            src, dst = op.inputs[0], op.outputs[0]
            if dst not in out_slot:
                parent[dst] = find(src)

    loc: dict[int, Loc] = {}
    copies = []
    for ti in model.outputs:
        if ti in in_slot or tensors[ti].is_const:
            copies.append((ti, out_slot[ti]))

    # lifetimes of arena groups
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    for op in ops:
        for ti in op.outputs + [i for i in op.inputs if i >= 0]:
            r = find(ti)
            t = tensors[r]
            if t.is_const or r in in_slot or r in out_slot:
                continue
            first[r] = min(first.get(r, op.index), op.index)
            last[r] = max(last.get(r, op.index), op.index)
            members.setdefault(r, [])
            if ti not in members[r]:
                members[r].append(ti)

    # greedy: largest first, lowest non-conflicting offset
    def rup(n):
        return (n + align - 1) // align * align

    order = sorted(first, key=lambda r: (-tensors[r].nbytes, first[r], r))
    placed: list[tuple[int, int, int, int]] = []   # (offset, size, first, last)
    offsets = {}
    for r in order:
        size = rup(max(tensors[r].nbytes, 1))
        conflicts = sorted((o, s) for (o, s, f, l) in placed
                           if not (l < first[r] or last[r] < f))
        off = 0
        for o, s in conflicts:
            if off + size <= o:
                break
            off = max(off, rup(o + s))
        placed.append((off, size, first[r], last[r]))
        offsets[r] = off
    arena = max((o + s for o, s, _, _ in placed), default=0)

    buffers = []
    for bid, r in enumerate(sorted(offsets, key=lambda r: (offsets[r], first[r]))):
        buffers.append({"tensors": members[r], "offset": offsets[r],
                        "bytes": tensors[r].nbytes, "first_op": first[r], "last_op": last[r]})

    for t in tensors:
        r = find(t.index)
        if tensors[r].is_const:
            loc[t.index] = Loc("const", r)
        elif r in in_slot:
            loc[t.index] = Loc("input", in_slot[r])
        elif t.index in out_slot:
            loc[t.index] = Loc("output", out_slot[t.index])
        elif r in out_slot:
            loc[t.index] = Loc("output", out_slot[r])
        elif r in offsets:
            loc[t.index] = Loc("arena", 0, offsets[r])
    return Plan(loc, arena, buffers, copies)

