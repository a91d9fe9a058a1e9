"""The fast path's part of the mGRADE package (mcu/runtime/mg_fast.h), read from the step
program: the fused steps' fast declarations (`fast_delay`, `fast_mingru`, `fast_mingru_u16`:
channel-major taps, re-laid FC weights, 256-entry tables, the g() split) and which generic
operators a fast step absorbs (`residual_adds`: the residual ADD right after a fused step;
`fc_epilogue` / `epilogue_call`: up to three elementwise ops after an FC). Each returns None
where the fast kernel's conditions fail, and the package then runs the reference kernel.
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert.cemit import clist, int_array, struct_decl
from mgrade_edge.convert.codegen_fast import (
    add_ok, chan_decl, chan_table, dw_chan_rows, elementwise_count, fc_weights, ffc_decls,
    fdot16_w16_decl, ffc_layout, ffc_struct, g_split_tables, logistic_min_table,
    logistic_table, requant_table, table_decl)
from mgrade_edge.convert.steps import DelayStep, MinGRUStep, StepProgram
from mgrade_edge.convert.tflite_reader import Model
from mgrade_edge.convert.tflm_params import ALIAS_OPS


def fast_delay(P: str, T, f: DelayStep, add=None):
    """Fast delay step: channel-major taps, folded bias, FC-style requantization; add =
    (ADD op index, swap) of a residual ADD(frame, conv) fused into the same pass."""
    p = f.dw
    H = p["out_c"]
    N = f.delays.shape[1]
    filt = np.asarray(T[f.filt].data, np.int64).reshape(N, H)       # [N, H]
    rows = dw_chan_rows(filt, T[f.bias].data if f.bias >= 0 else None, p)
    if rows is None:
        return None                     # the short requantization needs |acc| < 2^30
    L = f.layer
    decls = [int_array("uint16_t", f"{P}_l{L}_delay_cm", f.delays.reshape(-1)),
             int_array("int8_t", f"{P}_l{L}_filter_cm", filt.T.reshape(-1)),
             chan_decl(f"{P}_l{L}_dw_ch", rows),
             ffc_struct(P, f"l{L}_dw_q", p, N, 0, H, "NULL", f"{P}_l{L}_dw_ch", rows),
             struct_decl("mg_delay_fast_t", f"{P}_l{L}_delay_f", dict(
                 channels=H, taps=N, ring_len=f"{P}_l{L}_ring_len", ring_off=f"{P}_l{L}_ring_off",
                 delay=f"{P}_l{L}_delay_cm", filter=f"{P}_l{L}_filter_cm", q=f"&{P}_l{L}_dw_q",
                 add=f"&{P}_op{add[0]}" if add else "NULL", add_swap=int(add[1]) if add else 0))]
    return decls, None, (0, 0)


def _relu_table(prefix: str, name: str, relu_params: dict | None, decls: list[str]):
    """(C name of the RELU branch's 256-entry requantization table or "NULL", the table
    int8 [256] or None); the table's declaration is appended to decls."""
    if relu_params is None:
        return "NULL", None
    table = requant_table(relu_params)
    decls.append(table_decl(prefix, name, table))
    return f"{prefix}_{name}", table


def fast_mingru(P: str, model: Model, T, f: MinGRUStep, report: dict, add=None,
                 state16: bool = False):
    """Fast minGRU step declarations (None where a condition of the fast kernel fails); add =
    (ADD op index, swap) of a residual ADD(u, h_new) fused into the same pass; state16: the
    layer runs the int16 state tail, whose gate table is mg_state16's z16_lut (no sig_z)."""
    L = f.layer
    H = f.fc["gate"][1]["output_depth"]
    lay = {}
    for role, (fop, p) in f.fc.items():
        w, bias = fc_weights(model, fop)
        if w is None:
            report[f"l{L}_gru"] = f"{role}: weights not constant"
            return None
        lay[role], why = ffc_layout(w, bias, p)
        if lay[role] is None:
            report[f"l{L}_gru"] = f"{role}: {why}"
            return None
    if not all(add_ok(x) for x in (f.add_g, f.sub, f.add_h) if x is not None):
        report[f"l{L}_gru"] = "ADD/SUB parameters outside the fast kernel's range"
        return None
    decls = []
    for role in ("gate", "cand"):
        decls += ffc_decls(P, f"l{L}_{role}_f", f.fc[role][1], lay[role])
    mc = np.asarray(T[f.min_const].data).reshape(-1)
    if not state16:
        decls.append(table_decl(P, f"l{L}_sig_z_lut", logistic_table(f.sig_z)))
    if mc.size == 1:
        decls.append(table_decl(P, f"l{L}_sig_min_p_lut", logistic_min_table(f.sig_p,
                                                                             int(mc[0]))))
        sig = dict(sig_min_p=f"{P}_l{L}_sig_min_p_lut", min_const="NULL", sig_p="NULL")
    else:
        decls.append(table_decl(P, f"l{L}_sig_p_lut", logistic_table(f.sig_p)))
        sig = dict(sig_min_p="NULL", min_const=f"{P}_t{f.min_const}", sig_p=f"{P}_l{L}_sig_p_lut")
    relu_fc = "NULL"
    if "relu_fc" in f.fc:
        p = f.fc["relu_fc"][1]
        if f.shares_dot:       # cand's re-laid weights, relu_fc's own bias and quantization
            rows, blocks = lay["relu_fc"][1:3]
            decls += [chan_decl(f"{P}_l{L}_relu_fc_f_ch", rows),
                      ffc_struct(P, f"l{L}_relu_fc_f", p, p["accum_depth"], blocks,
                                 p["output_depth"], f"{P}_l{L}_cand_f_w",
                                 f"{P}_l{L}_relu_fc_f_ch", rows)]
        else:
            decls += ffc_decls(P, f"l{L}_relu_fc_f", p, lay["relu_fc"])
        relu_fc = f"&{P}_l{L}_relu_fc_f"
    relu, relu_tab = _relu_table(P, f"l{L}_relu_lut", f.relu, decls)
    split = dict(g_split="NULL", g_neg="NULL", g_pos="NULL")
    if "relu_fc" in f.fc and f.shares_dot and mc.size == 1:
        gs = g_split_tables(lay["cand"][1], f.fc["cand"][1], lay["relu_fc"][1],
                            f.fc["relu_fc"][1], lay["cand"][3], relu_tab, f.sig_p, int(mc[0]),
                            f.add_g)
        if gs is not None:
            decls += [f"static const int32_t {P}_l{L}_g_split[{H}] = {clist(gs[0])};",
                      table_decl(P, f"l{L}_g_neg", gs[1]), table_decl(P, f"l{L}_g_pos", gs[2])]
            split = dict(g_split=f"{P}_l{L}_g_split", g_neg=f"{P}_l{L}_g_neg",
                         g_pos=f"{P}_l{L}_g_pos")
        else:
            report[f"l{L}_g"] = "g() computed per element (no split)"
    decls.append(struct_decl("mg_mingru_fast_t", f"{P}_l{L}_gru_f", dict(
        channels=H, gate=f"&{P}_l{L}_gate_f", cand=f"&{P}_l{L}_cand_f",
        sig_z="NULL" if state16 else f"{P}_l{L}_sig_z_lut", **sig, relu_fc=relu_fc,
        relu_fc_shares_dot=int(f.shares_dot),
        relu=relu, add_g=f"&{P}_l{L}_add_g",
        **{k: f"&{P}_l{L}_{k}" if getattr(f, k) is not None else "NULL"
           for k in ("sub", "mul", "add_h")}, **split, add_v=f"&{P}_op{add[0]}" if add else "NULL",
        add_v_swap=int(add[1]) if add else 0)))
    n_acc = (3 if "relu_fc" in f.fc and not f.shares_dot else 2) * 4 * ((H + 3) // 4)
    return decls, None, (2 * lay["gate"][2], n_acc)


def fast_mingru_u16(P: str, model: Model, f: MinGRUStep, report: dict):
    """Fast declarations of an int16-input minGRU step (mg_fast.h mg_mingru_fast_u16): the
    candidate's int8 tables and the mg_input16_fast_t; None (reference kernel) where the fast
    kernel's conditions fail."""
    L = f.layer
    params, front = f.front16.params, f.front16.tensors
    roles = [r for r in ("gate", "cand", "relu_fc") if r in params]
    fcs = [params[r] for r in roles]
    if any(p["input_offset"] or (not p["per_channel"] and p["filter_offset"]) for p in fcs) \
            or not add_ok(f.add_g):
        report[f"l{L}_gru"] = "int16 input: offsets or ADD outside the fast kernel's range"
        return None
    decls, rows = [], {}
    for role in roles:          # FC16 outputs from their dots: bias and rounding in the rows
        op, p = front["fcs"][role], params[role]
        w, bias = fc_weights(model, op)
        bias = np.zeros(p["output_depth"], np.int64) if bias is None else bias.astype(np.int64)
        if w is None or np.any(np.abs(bias) + 32768 * np.abs(w.astype(np.int64)).sum(1)
                               >= (1 << 30)):
            report[f"l{L}_gru"] = "int16 input: |acc| could reach 2^30 (reference kernel)"
            return None
        mults = p["multiplier"] * (p["output_depth"] if not p["per_channel"] else 1)
        shifts = p["shift"] * (p["output_depth"] if not p["per_channel"] else 1)
        rows[role] = chan_table(bias, mults, shifts, 0)
        decls += [chan_decl(f"{P}_l{L}_in16_{role}_ch", rows[role]),
                  ffc_struct(P, f"l{L}_in16_{role}_f", p, p["accum_depth"], 0,
                             p["output_depth"], "NULL", f"{P}_l{L}_in16_{role}_ch", rows[role])]
    mc = np.asarray(model.tensors[f.min_const].data).reshape(-1)
    if mc.size == 1:
        sig, min_const = logistic_min_table(f.sig_p, int(mc[0])), "NULL"
    else:
        sig, min_const = logistic_table(f.sig_p), f"{P}_t{f.min_const}"
    decls.append(table_decl(P, f"l{L}_in16_sig_q", sig))
    relu, relu_tab = _relu_table(P, f"l{L}_in16_relu", f.relu, decls)
    split = dict(g_split="NULL", g_neg="NULL", g_pos="NULL")
    if "relu_fc" in rows and f.shares_dot and mc.size == 1:     # g() of the shared dot alone
        bound = 32768 * np.abs(fc_weights(model, front["fcs"]["cand"])[0]
                               .astype(np.int64)).sum(1)
        gs = g_split_tables(rows["cand"], params["cand"], rows["relu_fc"], params["relu_fc"],
                            bound, relu_tab, f.sig_p, int(mc[0]), f.add_g, params["p8"],
                            params["r8"])
        if gs is not None:
            decls += [f"static const int32_t {P}_l{L}_in16_g_split[{len(gs[0])}] = "
                      f"{clist(gs[0])};", table_decl(P, f"l{L}_in16_g_neg", gs[1]),
                      table_decl(P, f"l{L}_in16_g_pos", gs[2])]
            split = {k: f"{P}_l{L}_in16_{k}" for k in split}
        else:
            report[f"l{L}_g"] = "int16 input: g() computed per element (no split)"
    fields = dict(q=f"&{P}_l{L}_in16", **{r: f"&{P}_l{L}_in16_{r}_f" if r in rows else "NULL"
                                           for r in ("gate", "cand", "relu_fc")},
                  sig_q=f"{P}_l{L}_in16_sig_q", min_const=min_const, relu=relu, **split)
    w16 = {r: f"{P}_l{L}_in16_{r}_w16" for r in rows if not (r == "relu_fc" and f.shares_dot)}
    decls += ["#if MG_FDOT16_W16"]      # int16 weight copies for the DSP cores' dots
    decls += [fdot16_w16_decl(w16[r], fc_weights(model, front["fcs"][r])[0]) for r in w16]
    decls += [struct_decl("mg_input16_fast_t", f"{P}_l{L}_in16f", dict(
        fields, **{("relu" if r == "relu_fc" else r) + "_w16": v for r, v in w16.items()})),
        "#else", struct_decl("mg_input16_fast_t", f"{P}_l{L}_in16f", fields), "#endif"]
    H4 = 4 * ((params["gate"]["output_depth"] + 3) // 4)     # the dots (mg_fast.h acc)
    n_dots = 3 if "relu_fc" in rows and not f.shares_dot else 2
    return decls, None, (2 * (params["gate"]["accum_depth"] // 4), n_dots * H4)


def _op_sequence(ops: list):
    """(the non-alias ops in order, alias output -> input, root(tensor): the tensor an alias
    chain starts from)."""
    seq = [op for op in ops if op.op not in ALIAS_OPS]
    alias = {op.outputs[0]: op.inputs[0] for op in ops if op.op in ALIAS_OPS}

    def root(t):
        while t in alias:
            t = alias[t]
        return t

    return seq, alias, root


def residual_adds(program: StepProgram, ops: list, fused_at: dict, graph_outputs) -> dict:
    """The residual ADD right after a fused delay (ADD(frame, conv), the conv output used by
    nothing else) or minGRU step (ADD(u, h_new)) that the fast step can compute in the same
    pass: {fused op index: (ADD op index, swap)}. Only where the ADD is the next non-alias op
    (so writing its output early cannot clobber a live buffer) and its parameters suit the
    fast kernel."""
    out = {}
    seq, alias, root = _op_sequence(ops)
    users: dict[int, list] = {}
    for op in ops:
        for i in op.inputs:
            users.setdefault(i, []).append(op)
    for k, op in enumerate(seq[:-1]):
        f = fused_at.get(op.index)
        if f is None or op.op not in ("MG_DELAY", "MG_MINGRU"):
            continue
        nxt = seq[k + 1]
        if nxt.op != "ADD" or len(nxt.inputs) != 2 or program.op_steps[nxt.index].wide:
            continue
        p = program.op_steps[nxt.index].params
        if not add_ok(p) or elementwise_count(p) != program.channels:
            continue
        ins = [root(i) for i in nxt.inputs]
        if op.op == "MG_DELAY":
            want = (f.frame, f.out)
            chain = [t for t, src in alias.items() if root(t) == f.out] + [f.out]
            private = all(u.index == nxt.index or u.op in ALIAS_OPS
                          for t in chain for u in users.get(t, [])) and \
                not any(t in graph_outputs for t in chain)
        else:
            want = (f.u, f.h8)
            private = True
        if sorted(ins) != sorted(want) or ins[0] == ins[1] or not private:
            continue
        out[op.index] = (nxt.index, ins[0] != want[0])
    return out


def epilogue_call(P: str, fc, chain, fast, ptr):
    """The fast FC call with its epilogue ops (mg_ffc_epi_s8) in place of mg_ffc_s8."""
    fdecls, fbody, words = fast
    pad = ["NULL"] * (3 - len(chain))
    kinds = [{"ADD": 1, "SUB": 2, "MUL": 3}[op.op] for op, _, _ in chain] + [0] * (3 - len(chain))
    adds = [f"&{P}_op{op.index}" if op.op != "MUL" else "NULL" for op, _, _ in chain] + pad
    muls = [f"&{P}_op{op.index}" if op.op == "MUL" else "NULL" for op, _, _ in chain] + pad
    swaps = [int(sw) for _, sw, _ in chain] + [0] * (3 - len(chain))
    others = [ptr(o, True) for _, _, o in chain] + pad
    n = fc.index
    decl = struct_decl("mg_epi_t", f"{P}_op{n}_epi", dict(kind=kinds, add=adds, mul=muls,
                                                          swap=swaps))
    out = ptr(chain[-1][0].outputs[0], False)
    call = (f"    mg_ffc_epi_s8(&{P}_op{n}f, {ptr(fc.inputs[0], True)}, {P}_xq, {P}_acc, {out}, "
            f"&{P}_op{n}_epi, {', '.join(others)});")
    head = fbody[0].replace("(fast)", f"(fast, + ops {[op.index for op, _, _ in chain]})")
    return fdecls + [decl], [head, call], words


def fc_epilogue(program: StepProgram, ops: list, fc, plan, graph_outputs) -> list:
    """Elementwise ADD/SUB/MUL ops that directly follow a FULLY_CONNECTED and read its value
    (and one other vector of the same size): [(op, swap, other tensor)], at most 3. Stops at
    an op whose input is used elsewhere, at a graph output, and where writing the final result
    early could overwrite another operand (different arena offsets that overlap)."""
    seq, _, root = _op_sequence(ops)
    users: dict[int, list] = {}
    for op in ops:
        for i in op.inputs:
            users.setdefault(root(i), []).append(op)
    n = program.op_steps[fc.index].params["output_depth"]
    k = next(i for i, op in enumerate(seq) if op.index == fc.index)
    cur, chain = fc.outputs[0], []
    for nxt in seq[k + 1:k + 4]:
        if nxt.op not in ("ADD", "SUB", "MUL") or len(nxt.inputs) != 2:
            break
        ins = [root(i) for i in nxt.inputs]
        if ins.count(cur) != 1 or cur in graph_outputs:
            break
        if [u.index for u in users.get(cur, [])] != [nxt.index]:
            break
        p = program.op_steps[nxt.index].params
        if elementwise_count(p) != n or (nxt.op != "MUL" and not add_ok(p)):
            break
        swap = ins[1] == cur
        chain.append((nxt, swap, nxt.inputs[0 if swap else 1]))
        cur = root(nxt.outputs[0])
    # the final result is written while the other operands are still read
    while chain:
        fin = plan.loc.get(chain[-1][0].outputs[0])
        clash = False
        for _, _, o in chain:
            lo = plan.loc.get(root(o))
            if fin is not None and lo is not None and fin.kind == lo.kind == "arena" and \
                    fin.offset != lo.offset and fin.offset < lo.offset + n and \
                    lo.offset < fin.offset + n:
                clash = True
        if not clash:
            break
        chain.pop()
    return chain
