"""The widening ladder: the deployable forms of one converted step model, cheapest first.

    int8      every activation int8
    state16   + the minGRU state update in int16, gate z int16 (widen_state)
    input16   + each minGRU's input u = frame + conv(frame), its FCs (16x8) and the layer's
              residual sum v = u + h' in int16 (widen_input; layers without a delay conv, or
              whose biases would overflow, keep an int8 input)
    conv16    input16 + each delay conv's output in int16: the gathered int8 taps requantized
              to int16, a 16x8 DEPTHWISE_CONV_2D, so u = frame + conv is int16 end to end
              (widen_conv; the ring and the taps stay int8: TFLite-Micro has no int16 GATHER)
    mlp16     input16 + each block's MLP (both FCs 16x8) and its residual sum w = v + mlp in
              int16 (widen_mlp)
    conv_mlp16  conv16 + mlp16: every int16 rung together

The rungs are ordered by their cost on the device (instructions per step, measured: conv16's
16x8 delay conv adds little to input16, the int16 MLP about doubles it), not nested: mlp16
does not hold conv16's int16 conv output, conv_mlp16 holds both.

Each form is a .tflite that TFLite-Micro and LiteRT run, bit-exact on the generated C package
(both paths; convert/state16.py, convert/input16.py, convert/ops16.py), refused by the
MicroPython target in one line (it has only the int8 form). What each rung buys was measured
with benchmarks/int8_attribution.py (its `int16 path + G` rows simulate widening group G);
`python -m mgrade_edge.convert --form auto` (the default, also `--state-bits auto`) picks one
by validation accuracy (convert/ladder.py).

`build(raw, spec, info, form)` -> (model bytes, report fields); the report fields are also in
the model's metadata (state_bits, gate_bits, input_bits, conv_bits, mlp_bits, form).
"""
from __future__ import annotations

FORMS = ("int8", "state16", "input16", "conv16", "mlp16", "conv_mlp16")
# what each form holds in int16, for tables and messages
WIDENED = {"int8": "nothing", "state16": "minGRU state + gate",
           "input16": "state + gate + minGRU input u + residual v",
           "conv16": "state + gate + input u + residual v + delay-conv output",
           "mlp16": "state + gate + input u + residual v + MLP (w = v + mlp)",
           "conv_mlp16": "state + gate + input u + residual v + delay-conv output + MLP"}
# the attribution tool's groups (benchmarks/int8_attribution.py) each form holds at int16
GROUPS16 = {"int8": (), "state16": ("state", "update", "gate_z"),
            "input16": ("state", "update", "gate_z", "resid", "mix"),
            "conv16": ("state", "update", "gate_z", "resid", "mix", "conv"),
            "mlp16": ("state", "update", "gate_z", "resid", "mix", "mlp"),
            "conv_mlp16": ("state", "update", "gate_z", "resid", "mix", "conv", "mlp")}


def has_rnn(spec) -> bool:
    return any(layer.wz is not None for layer in spec.layers)


def available(spec) -> tuple[str, ...]:
    """The forms a network can take: every rung with a minGRU, only int8 without one."""
    return FORMS if has_rnn(spec) else ("int8",)


def build(raw: bytes, spec, info: dict, form: str, gate_bits: int = 16, note=print,
          input_bits: int = 16) -> tuple[bytes, dict]:
    """(model bytes, report fields) of `form` from the converter's raw int8 model.
    gate_bits applies to the int16 forms (input16 and above need 16; with 8 they fall back to
    state16's input); input_bits 8 makes input16 and above keep each minGRU's int8 input (and
    so conv16's int8 conv output: it feeds the int16 u)."""
    from mgrade_edge.convert.quantize import finalize, read_metadata
    from mgrade_edge.convert.widen import widen_conv, widen_input, widen_mlp, widen_state

    if form not in FORMS:
        raise ValueError(f"unknown form {form!r} (one of {', '.join(FORMS)})")
    model8 = finalize(raw, spec, {**info, "state_bits": 8})
    if form == "int8":
        return model8, {"state_bits": 8}
    layers = read_metadata(model8)["layers"]

    def state16_model(extra: dict) -> bytes:
        return widen_state(finalize(raw, spec, {**info, "state_bits": 16, **extra}), layers,
                           gate16=gate_bits == 16)

    extra = {"gate_bits": gate_bits, "input_bits": 8}
    input16 = form != "state16" and input_bits == 16 and gate_bits == 16 and any(
        lay["rnn"] and lay["conv"] for lay in layers)
    if input16:             # which layers can take an int16 input (a dry run), then the model
        skipped: list[int] = []
        widen_input(state16_model(extra), layers, skipped=skipped)
        eligible = [i for i, lay in enumerate(layers) if lay["rnn"] and lay["conv"]]
        if skipped:
            note(f"note: --input-bits 16: minGRU layer(s) {skipped} keep an int8 input (their "
                 f"FC biases would overflow the 16x8 int32 accumulator)")
        input16 = len(skipped) < len(eligible)
        if input16:
            extra = {"gate_bits": gate_bits, "input_bits": 16,
                     **({"input8_layers": skipped} if skipped else {})}

    conv16 = input16 and form in ("conv16", "conv_mlp16")
    if conv16:
        extra = {**extra, "conv_bits": 16}

    def front(extra: dict) -> bytes:
        m = state16_model(extra)
        m = widen_input(m, layers) if input16 else m
        return widen_conv(m) if conv16 else m

    if form not in ("mlp16", "conv_mlp16"):
        extra = {**extra, "form": form} if conv16 else extra
        return front(extra), {"state_bits": 16, **extra}
    skipped_mlp: list[int] = []
    widen_mlp(front(extra), skipped_mlp)           # dry run: which blocks keep an int8 MLP
    if skipped_mlp:
        note(f"note: form {form}: block(s) {skipped_mlp} keep an int8 MLP (their FC biases "
             f"would overflow the 16x8 int32 accumulator)")
    extra = {**extra, "mlp_bits": 16, "form": "conv_mlp16" if conv16 else "mlp16",
             **({"mlp8_layers": skipped_mlp} if skipped_mlp else {})}
    return widen_mlp(front(extra)), {"state_bits": 16, **extra}


def name_of(report: dict) -> str:
    """The form a report's (or metadata's) width fields describe."""
    if report.get("state_bits", 8) != 16:
        return "int8"
    if report.get("mlp_bits") == 16:
        return "conv_mlp16" if report.get("conv_bits") == 16 else "mlp16"
    if report.get("conv_bits") == 16:
        return "conv16"
    return "input16" if report.get("input_bits") == 16 else "state16"
