"""Mutation score of the test suite: plant small, plausible one-line bugs one at a time in a
scratch copy of the repository and check that the tests of that area fail.

    python -m benchmarks.mutation_score [--area A,...] [--only ID,...] [--list] [--keep]
                                        [--timeout S] [--slow]

Areas: training (scan, delay kernel, layers, model), convert (norm folding), runtime (C
fixed-point arithmetic, LOGISTIC, reference kernels), link (COBS, CRC, framing, reply cache,
retransmission: C app, MicroPython app and host), memory (the memory report), durability (checkpoint write,
resume). Each mutation is (id, area, file, original text, mutated text, tests to run, what).
The original text must occur exactly once in the file, otherwise the mutation is STALE (the
code moved: update the list); a named test file that does not exist makes it NO TESTS. A
mutation is CAUGHT when its tests fail (pytest exit 1) or time out, SURVIVED when they pass.
Only the fast tier runs (`-m "not slow"`) unless --slow is given, and only the tests of the
mutated area, so a round of one area takes minutes on 2 cores.

The scratch copy is the working tree (tracked and untracked files that git does not ignore)
plus the shared .venv link, so new tests count before they are committed. Exit 0 when every
planted mutation is caught, 1 otherwise, 2 on a usage error. Not part of `make test`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    area: str          # training | convert | runtime | link | memory | durability
    file: str          # path relative to the repo root
    old: str           # exact text, must occur once
    new: str
    tests: tuple       # pytest node ids or files (relative to the repo root)
    what: str          # the plausible bug in words


M = Mutation

TRAIN_T = ("tests/test_scan.py", "tests/test_delay_ops.py", "tests/test_model.py")
SCAN_T = ("tests/test_scan.py",)
DELAY_T = ("tests/test_delay_ops.py", "tests/test_model.py")
MODEL_T = ("tests/test_model.py", "tests/test_bite_training.py")
CONVERT_T = ("tests/test_bite_convert.py", "tests/test_convert.py::test_gather_indices_layout")
RUNTIME_T = ("tests/test_runtime_kernels.py", "tests/test_bite_quant.py",
             "tests/test_bite_kernels.py")
LINK_T = ("tests/test_link.py", "tests/test_protocol.py", "tests/test_conformance.py",
          "tests/test_fuzz_parser.py::test_fuzz_other_seed_smoke")
CONFORMANCE_T = ("tests/test_conformance.py",)
FRAMING_T = ("tests/test_bite_framing.py", "tests/test_protocol.py")
C_FRAMING_T = ("tests/test_bite_framing.py",) + LINK_T
MEMORY_T = ("tests/test_memory.py", "tests/test_memory_device.py")
DURABLE_T = ("tests/test_train.py::test_resume_after_kill_gives_identical_weights",
             "tests/test_train.py::test_sigint_saves_and_resumes",
             "tests/test_train.py::test_resume_with_other_architecture_is_refused",
             "tests/test_train.py::test_corrupt_checkpoint_is_a_clear_error",
             "tests/test_robustness.py::"
             "test_kill_mid_checkpoint_write_keeps_the_previous_checkpoint",
             "tests/test_robustness.py::test_broken_checkpoints_are_clear_errors",
             "tests/test_bite_resume.py")

# Not listed: equivalent mutants (the chunk length of the scan, the direct/FFT threshold of the
# convolution: every choice gives the same result within float rounding; the log-space scan's
# decay of the prepended h0 term, which cancels in a* + logcumsumexp(log b - a*); the bounds of
# the logistic's saturating shift (-threshold - 1 shifts to INT32_MIN exactly, and no input
# reaches them) and of LOGISTIC's input radius (at |x| = radius the computed value already
# rounds to -128 / 127)).
MUTATIONS: list[Mutation] = [
    # --- training: the scan, the candidate activation ----------------------------------------
    M("scan-g-offset", "training", "training/scan.py",
      "torch.where(x >= 0, x + 0.5, torch.sigmoid(x))",
      "torch.where(x >= 0, x + 0.25, torch.sigmoid(x))", SCAN_T, "wrong offset in g()"),
    M("scan-loop-gate", "training", "training/scan.py",
      "h = (1 - z[:, t]) * h + z[:, t] * cand[:, t]", "h = (1 - z[:, t]) * h + cand[:, t]",
      SCAN_T, "gate dropped from the reference loop"),
    M("scan-remainder", "training", "training/scan.py",
      "    for t in range(Tm, T):                       # the remainder",
      "    for t in range(Tm + 1, T):                       # the remainder", SCAN_T,
      "first remainder step skipped"),
    M("scan-carry-h0", "training", "training/scan.py",
      "    first = 0 if h0 is not None else 1", "    first = 1", SCAN_T,
      "h0 never reaches the first chunk"),
    M("scan-bwd-dh0", "training", "training/scan.py",
      "            d_h0 = a[:, 0] * gacc[:, 0]", "            d_h0 = gacc[:, 0]", SCAN_T,
      "gradient to h0 misses the first decay"),
    M("scan-bwd-gprime", "training", "training/scan.py",
      "gp = torch.sign(h_pre.clamp(max=0)).add_(1).mul_(0.75)",
      "gp = torch.sign(h_pre.clamp(max=0)).add_(1).mul_(0.5)", SCAN_T,
      "g'(x) for x >= 0 is 0.75, not 1"),
    M("scan-log-h0", "training", "training/scan.py",
      "    h = h[:, 1:] if h0 is not None else h", "    h = h[:, :-1] if h0 is not None else h",
      SCAN_T, "log-space scan with h0 returns the sequence one step late"),
    # --- training: the delay kernel -------------------------------------------------------------
    M("delay-gauss-norm", "training", "training/delay_ops.py",
      "gauss = gauss / gauss.sum(-1, keepdim=True).clamp_min(1e-12)",
      "gauss = gauss / gauss.sum(-1, keepdim=True).clamp_min(1e-12).sqrt()", DELAY_T,
      "Gaussian taps not normalised to 1"),
    M("delay-direct-flip", "training", "training/delay_ops.py",
      "w = kernel.flip(-1).unsqueeze(1)", "w = kernel.unsqueeze(1)", DELAY_T,
      "direct conv correlates instead of convolving"),
    M("delay-fft-len", "training", "training/delay_ops.py", "need = max(1, T + K - 1)",
      "need = max(1, T + K - 2)", DELAY_T, "FFT one point too short: wrap-around"),
    M("delay-gather-pad", "training", "training/delay_ops.py",
      "idx = (D - delays).unsqueeze(-1) + t", "idx = (D - delays).unsqueeze(-1) + t - 1",
      DELAY_T, "sparse taps read one frame late"),
    M("delay-window-start", "training", "training/delay_ops.py",
      "start = (positions.detach().round().long() - radius).clamp(0, span - W)",
      "start = (positions.detach().floor().long() - radius).clamp(0, span - W)", DELAY_T,
      "truncation window centred on floor, not round"),
    M("delay-radius-half", "training", "training/delay_ops.py",
      "term = math.exp(-((w + 0.5 + m) ** 2 - 0.25) / s2)",
      "term = math.exp(-((w + 1.5 + m) ** 2 - 0.25) / s2)", DELAY_T,
      "truncation bound too optimistic"),
    # --- training: layers (harden, DelayConv step) and the model's step vs forward ------------
    M("layer-delays-floor", "training", "training/layers.py",
      "return self.positions.detach().round().clamp(0, self.span - 1).long()",
      "return self.positions.detach().floor().clamp(0, self.span - 1).long()", MODEL_T,
      "harden floors instead of rounding"),
    M("layer-delays-clamp", "training", "training/layers.py",
      "return self.positions.detach().round().clamp(0, self.span - 1).long()",
      "return self.positions.detach().round().clamp(0, self.span).long()", MODEL_T,
      "a delay may equal the span"),
    M("layer-state-frames", "training", "training/layers.py",
      "            return int(self.delays().max()) if self.n_taps else 0",
      "            return int(self.delays().max()) + 1 if self.n_taps else 0", MODEL_T,
      "hardened ring keeps one frame too many"),
    M("layer-trim-forward", "training", "training/layers.py",
      "kernel = kernel[:, : self.state_frames() + 1]",
      "kernel = kernel[:, : self.state_frames()]", MODEL_T,
      "forward drops the largest delay"),
    M("layer-step-shift", "training", "training/layers.py", "return y, frames[:, :S]",
      "return y, frames[:, 1:]", MODEL_T, "step drops the newest frame from the past"),
    M("layer-gru-step", "training", "training/layers.py",
      "h = (1 - z) * h + z * g(h_pre)", "h = (1 - z) * h + z * h_pre", MODEL_T,
      "minGRU step without g()"),
    M("layer-harden-grad", "training", "training/layers.py",
      "            self.positions.requires_grad_(False)\n", "", MODEL_T,
      "hardened positions keep learning"),
    M("layer-bn-affine", "training", "training/layers.py",
      "return scale, self.bias - self.running_mean * scale",
      "return scale, self.bias - self.running_mean", CONVERT_T,
      "BatchNorm eval affine: shift not scaled"),
    M("model-step-mean", "training", "training/model.py",
      "out = acc / t if self.readout_mode == \"mean\" else logits",
      "out = acc / max(1, t - 1) if self.readout_mode == \"mean\" else logits", MODEL_T,
      "running mean over t-1 steps"),
    M("model-forward-mean", "training", "training/model.py",
      "return self.readout(h.mean(dim=1))", "return self.readout(h[:, -1])", MODEL_T,
      "readout of the last step, not the mean"),
    # --- convert: norm folding ---------------------------------------------------------------
    M("spec-fold-pre-bias", "convert", "convert/spec.py",
      "w1, b1 = w1 * s[None, :], w1 @ t + b1", "w1, b1 = w1 * s[None, :], t + b1",
      CONVERT_T, "pre-norm shift not passed through the Dense"),
    M("spec-fold-pre-axis", "convert", "convert/spec.py",
      "w1, b1 = w1 * s[None, :], w1 @ t + b1", "w1, b1 = w1, w1 @ t + b1",
      CONVERT_T, "pre-norm scale dropped"),
    M("spec-fold-readout", "convert", "convert/spec.py",
      "wr, br = wr * last.post_scale[None, :], wr @ last.post_shift + br",
      "wr, br = wr * last.post_scale[None, :], br", CONVERT_T,
      "last post-norm shift lost in the readout fold"),
    M("spec-gru-split", "convert", "convert/spec.py",
      "layer.wz, layer.wh, layer.bz, layer.bh = w[:H], w[H:], b[:H], b[H:]",
      "layer.wz, layer.wh, layer.bz, layer.bh = w[:H], w[H:], b[H:], b[:H]", CONVERT_T,
      "minGRU gate and candidate biases swapped"),
    # --- runtime: C fixed-point arithmetic, LOGISTIC, reference kernels ----------------------
    M("c-srdhm-nudge", "runtime", "mcu/runtime/mg_quant.c",
      "nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));",
      "nudge = ((int64_t)1 << 30);", RUNTIME_T, "rounding nudge ignores the sign"),
    M("c-srdhm-minmin", "runtime", "mcu/runtime/mg_quant.c",
      "        return MG_INT32_MAX;\n    }\n    ab =", "        return MG_INT32_MIN;\n    }\n    ab =",
      RUNTIME_T, "INT32_MIN * INT32_MIN saturates to the wrong end"),
    M("c-rdbpot-threshold", "runtime", "mcu/runtime/mg_quant.c",
      "const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);",
      "const int32_t threshold = (mask >> 1);", RUNTIME_T,
      "round-half-away-from-zero becomes round-half-up"),
    M("c-mbqm-shift", "runtime", "mcu/runtime/mg_quant.c",
      "const int right_shift = shift > 0 ? 0 : -shift;",
      "const int right_shift = shift > 0 ? 0 : 1 - shift;", RUNTIME_T,
      "requantization shifts one bit too far"),
    M("c-exp-const", "runtime", "mcu/runtime/mg_quant.c",
      "const int32_t x = a + ((int32_t)1 << 28);     /* a + 1/8 */",
      "const int32_t x = a + ((int32_t)1 << 27);     /* a + 1/8 */", RUNTIME_T,
      "exp polynomial centred at 1/16"),
    M("c-exp-barrel", "runtime", "mcu/runtime/mg_quant.c",
      "const int shift_amount = kFractionalBits + (k - 2);",
      "const int shift_amount = kFractionalBits + (k - 1);", RUNTIME_T,
      "exp barrel shifter one octave off"),
    M("c-newton-iters", "runtime", "mcu/runtime/mg_quant.c", "for (i = 0; i < 3; ++i) {",
      "for (i = 0; i < 2; ++i) {", RUNTIME_T, "one Newton-Raphson iteration short"),
    M("c-logistic-neg", "runtime", "mcu/runtime/mg_quant.c",
      "return x > 0 ? pos : MG_INT32_MAX - pos;", "return x > 0 ? pos : MG_INT32_MAX - pos + 1;",
      RUNTIME_T, "logistic(-x) = 1 - logistic(x) off by one raw unit"),
    M("c-logistic-sat-low", "runtime", "mcu/runtime/mg_elem.h",
      "        return -128;\n    }\n    if (x >= p->input_range_radius) {",
      "        return -127;\n    }\n    if (x >= p->input_range_radius) {", RUNTIME_T,
      "LOGISTIC saturates one LSB above 0 on the negative side"),
    M("c-dw-offset", "runtime", "mcu/runtime/mg_kernels.c",
      "acc += fv * (iv + p->input_offset);", "acc += fv * iv;", RUNTIME_T,
      "depthwise conv ignores the input offset"),
    M("c-dw-bound", "runtime", "mcu/runtime/mg_kernels.c",
      "if (in_x < 0 || in_x >= p->in_w) {", "if (in_x < 0 || in_x > p->in_w) {", RUNTIME_T,
      "depthwise conv reads one past the row"),
    M("c-gather-bound", "runtime", "mcu/runtime/mg_kernels.c",
      "if (idx < 0 || idx >= p->axis_size) {", "if (idx < 0 || idx > p->axis_size) {",
      RUNTIME_T, "GATHER accepts an index one past the end"),
    M("c-min-strict", "runtime", "mcu/runtime/mg_kernels.c",
      "MG_BINARY_LOOP(bc, out[i] = in1[i1] < in2[i2] ? in1[i1] : in2[i2]);",
      "MG_BINARY_LOOP(bc, out[i] = in1[i1] < in2[i2] ? in1[i1] : in1[i1]);", RUNTIME_T,
      "MINIMUM returns the first input"),
    M("c-copy-overlap", "runtime", "mcu/runtime/mg_kernels.c", "    if (d < s) {",
      "    if (d != s) {", RUNTIME_T, "overlapping forward copy corrupts (memmove)"),
    M("c-concat-stride", "runtime", "mcu/runtime/mg_kernels.c",
      "const uint8_t *src = (const uint8_t *)inputs[i] + (size_t)k * (size_t)n;",
      "const uint8_t *src = (const uint8_t *)inputs[i];", RUNTIME_T,
      "CONCATENATION repeats the first outer slice"),
    # --- link: COBS, CRC, framing (C app and host) ------------------------------------------
    M("c-crc-poly", "link", "mcu/app/mg_crc.c", "crc = (uint16_t)((crc << 1) ^ 0x1021u);",
      "crc = (uint16_t)((crc << 1) ^ 0x1201u);", C_FRAMING_T, "CRC polynomial typo (C)"),
    M("c-cobs-full", "link", "mcu/app/mg_cobs.c", "    if (e->code == 0xFFu) {",
      "    if (e->code == 0xFEu) {", C_FRAMING_T, "COBS block closed one byte early (C)"),
    M("c-cobs-minimal", "link", "mcu/app/mg_cobs.c",
      "    if (e->code == 1u && e->after_full) {", "    if (e->code == 1u) {", C_FRAMING_T,
      "COBS drops the last block after a zero (C)"),
    M("c-cobs-dec-ff", "link", "mcu/app/mg_cobs.c", "        if (code != 0xFFu && i < n) {",
      "        if (i < n) {", C_FRAMING_T, "COBS decoder inserts a zero after a full block (C)"),
    M("c-cobs-trunc", "link", "mcu/app/mg_cobs.c", "if ((size_t)(code - 1u) > n - i) {",
      "if ((size_t)(code - 1u) > n - i + 1u) {", C_FRAMING_T,
      "COBS decoder reads past a truncated block (C)"),
    M("py-crc-init", "link", "host_tools/protocol.py", "crc: int = 0xFFFF", "crc: int = 0x0000",
      FRAMING_T, "CRC-16 initial value (host)"),
    M("py-cobs-full", "link", "host_tools/protocol.py",
      "        if code == 0xFF:\n            out[code_pos] = code",
      "        if code == 0xFE:\n            out[code_pos] = code", FRAMING_T,
      "COBS block closed one byte early (host)"),
    M("py-cobs-minimal", "link", "host_tools/protocol.py",
      "    if code == 1 and after_full:", "    if code == 1:", FRAMING_T,
      "COBS drops the last block after a zero (host)"),
    M("py-cobs-dec-ff", "link", "host_tools/protocol.py",
      "        if code != 0xFF and i < n:", "        if i < n:", FRAMING_T,
      "COBS decoder inserts a zero after a full block (host)"),
    M("py-len-check", "link", "host_tools/protocol.py",
      "    if length + HEADER + CRC_BYTES != len(pkt):",
      "    if length + HEADER + CRC_BYTES > len(pkt):", FRAMING_T,
      "length field may be shorter than the frame (host)"),
    M("py-crc-span", "link", "host_tools/protocol.py",
      "    if crc != crc16_ccitt(pkt[:-CRC_BYTES]):",
      "    if crc != crc16_ccitt(pkt[HEADER:-CRC_BYTES]):", FRAMING_T,
      "CRC does not cover the header (host decode)"),
    # --- link: reply cache, retransmission, resync (was tests/mutate_link.py) ---------------
    M("app-cache-seq", "link", "mcu/app/mg_app.c",
      "cache_type == p->type && p->seq == cache_seq && ", "cache_type == p->type && ", LINK_T,
      "cache ignores the seq"),
    M("app-cache-body", "link", "mcu/app/mg_app.c", "memcmp(p->body, cache_req, p->len) == 0",
      "1", LINK_T, "cache ignores the body"),
    M("app-cache-t", "link", "mcu/app/mg_app.c", "memcmp(p->body, cache_req, p->len) == 0",
      "memcmp(p->body + 4, cache_req + 4, p->len - 4u) == 0", LINK_T, "cache ignores t"),
    M("app-cache-half", "link", "mcu/app/mg_app.c", "memcmp(p->body, cache_req, p->len) == 0",
      "memcmp(p->body, cache_req, 4u + (p->len - 4u) / 2u) == 0", LINK_T,
      "cache compares half the frames"),
    M("app-cache-copy", "link", "mcu/app/mg_app.c", "    memcpy(cache_req, p->body, p->len);\n",
      "", LINK_T, "cache keeps no copy of the request"),
    M("proto-body-limit", "link", "mcu/app/mg_proto.c", "if (body_len > MG_PROTO_MAX_BODY) {",
      "if (body_len > MG_PROTO_MAX_BODY + 8u) {", LINK_T, "no body limit"),
    M("proto-body-off1", "link", "mcu/app/mg_proto.c", "if (body_len > MG_PROTO_MAX_BODY) {",
      "if (body_len >= MG_PROTO_MAX_BODY) {", LINK_T, "body limit off by one"),
    M("proto-peek", "link", "mcu/app/mg_proto.c", "    peek_header(frame, n, err);            /* before",
      "    /* before", LINK_T, "COBS errors without seq"),
    M("proto-peek-byte", "link", "mcu/app/mg_proto.c", "        err->seq = head[2];",
      "        err->seq = head[1];", LINK_T, "peek reads the wrong byte"),
    M("app-oversize-detail", "link", "mcu/app/mg_app.c",
      "err.code == MG_E_OVERSIZE ? (uint32_t)MG_PROTO_MAX_BODY : 0u", "0u", LINK_T,
      "OVERSIZE without its detail"),
    M("upy-cache-seq", "link", "mcu/micropython/mg_app.py",
      "self.cache_type == typ and self.cache_seq == seq and ", "self.cache_type == typ and ",
      CONFORMANCE_T, "cache ignores the seq (MicroPython)"),
    M("upy-cache-body", "link", "mcu/micropython/mg_app.py",
      "mg_proto.same(body, self.cache_req, ln)", "True", CONFORMANCE_T,
      "cache ignores the body (MicroPython)"),
    M("upy-body-limit", "link", "mcu/micropython/mg_proto.py", "        if blen > MAX_BODY:",
      "        if blen > MAX_BODY + 8:", CONFORMANCE_T, "no body limit (MicroPython)"),
    M("upy-peek", "link", "mcu/micropython/mg_proto.py",
      "        seq, typ = peek_header(self.buf, n)\n        d = self.dec",
      "        seq, typ = 0, 0\n        d = self.dec", CONFORMANCE_T,
      "frame errors without seq (MicroPython)"),
    M("upy-oversize-detail", "link", "mcu/micropython/mg_app.py",
      "mg_proto.MAX_BODY if ev[1] == mg_proto.E_OVERSIZE else 0", "0", CONFORMANCE_T,
      "OVERSIZE without its detail (MicroPython)"),
    M("host-resend-bad-frame", "link", "host_tools/protocol.py",
      "                if idempotent and sends <= self.retries:\n                    send()\n                continue\n            if pkt.type == BOOT:",
      "                continue\n            if pkt.type == BOOT:", LINK_T,
      "no resend on a bad reply frame"),
    M("host-resend-seq", "link", "host_tools/protocol.py",
      "            if pkt.type == ERROR and _parse_error(pkt.body)[0] in FRAME_ERRORS:",
      "            if pkt.type == ERROR and pkt.seq == seq and _parse_error(pkt.body)[0] in FRAME_ERRORS:",
      LINK_T, "resend only on frame errors naming our seq"),
    M("host-retries", "link", "host_tools/protocol.py",
      "                if idempotent and sends <= self.retries:\n                    send()\n                    continue\n                raise DeviceTimeout",
      "                if idempotent and sends < self.retries:\n                    send()\n                    continue\n                raise DeviceTimeout",
      LINK_T, "one retry too few"),
    M("host-no-resync", "link", "host_tools/protocol.py",
      "        except DeviceTimeout as e:\n            return self._recover_step(t, e)\n", "",
      LINK_T, "no resync after a lost STEP"),
    M("host-resync-t", "link", "host_tools/protocol.py",
      "            self._steps = t + 1            # it ran", "            self._steps = t            # it ran",
      LINK_T, "resync keeps the old t"),
    M("host-unsure", "link", "host_tools/protocol.py",
      "        if self._unsure is not None:\n            self._settle_unsure()\n", "", LINK_T,
      "unknown state not settled"),
    M("host-step-logits", "link", "host_tools/protocol.py",
      "        if state.steps == off + kk and not step_logits:\n            return\n",
      "        if state.steps == off + kk:\n            return\n", LINK_T,
      "lost per-step logits accepted"),
    M("host-max-body", "link", "host_tools/protocol.py",
      "        info.max_body = min(info.max_body, MAX_BODY)\n", "", LINK_T,
      "HELLO max_body trusted"),
    # --- memory report ---------------------------------------------------------------------
    M("memory-bias-bytes", "memory", "training/memory.py",
      "int8_params = c[\"weights\"] + c[\"conv_taps\"] + 4 * c[\"biases\"] + c[\"norm\"] + \\",
      "int8_params = c[\"weights\"] + c[\"conv_taps\"] + c[\"biases\"] + c[\"norm\"] + \\",
      MEMORY_T, "int8 biases counted as 1 byte"),
    M("memory-ring-plus1", "memory", "training/memory.py",
      "c[\"ring_trimmed\"] = int(conv.delays().max(dim=1).values.sum())",
      "c[\"ring_trimmed\"] = int((conv.delays().max(dim=1).values + 1).sum())", MEMORY_T,
      "trimmed ring counts the current frame"),
    M("memory-ring-global", "memory", "training/memory.py",
      "c[\"ring_trimmed\"] = int(conv.delays().max(dim=1).values.sum())",
      "c[\"ring_trimmed\"] = int(conv.delays().max()) * H", MEMORY_T,
      "trimmed ring sized by the layer's largest delay"),
    M("memory-delay-width", "memory", "training/memory.py", "DELAY_BYTES = 2      #",
      "DELAY_BYTES = 1      #",
      MEMORY_T, "delays stored in 1 byte"),
    M("memory-plain-frames", "memory", "training/memory.py",
      "c[\"ring_plain\"] = (span - 1) * H", "c[\"ring_plain\"] = span * H", MEMORY_T,
      "plain ring counts the current frame"),
    M("memory-acc-bytes", "memory", "training/memory.py",
      "int8_state = ring + c[\"rnn_state\"] + 4 * c.get(\"acc\", 0)",
      "int8_state = ring + c[\"rnn_state\"] + c.get(\"acc\", 0)", MEMORY_T,
      "int32 accumulator counted as 1 byte"),
    # --- durability: checkpoint write, resume --------------------------------------------------
    M("ckpt-no-rename", "durability", "training/checkpoint.py",
      "    tmp = path.with_name(path.name + \".tmp\")", "    tmp = path", DURABLE_T,
      "checkpoint written in place (no temp + rename)"),
    M("ckpt-arch-check", "durability", "training/checkpoint.py",
      "    if own != theirs:", "    if set(own) != set(theirs):", DURABLE_T,
      "architecture check ignores shapes"),
    M("resume-rng", "durability", "training/train.py",
      "            torch.set_rng_state(ckpt[\"rng\"][\"torch\"])\n", "", DURABLE_T,
      "resume does not restore the torch RNG"),
    M("resume-running", "durability", "training/train.py",
      "            self.running = dict(ckpt[\"running\"])\n", "", DURABLE_T,
      "resume forgets the epoch's running loss"),
    M("resume-batch", "durability", "training/train.py",
      "self.epoch, self.batch, self.step = ckpt[\"epoch\"], ckpt[\"batch\"], ckpt[\"step\"]",
      "self.epoch, self.batch, self.step = ckpt[\"epoch\"], 0, ckpt[\"step\"]", DURABLE_T,
      "resume restarts the epoch from its first batch"),
    M("resume-shuffle", "durability", "training/train.py",
      "            self.epoch_shuffle_state = ckpt[\"rng\"][\"epoch_shuffle\"]\n", "", DURABLE_T,
      "resume reshuffles the interrupted epoch"),
]


AREAS = ("training", "convert", "runtime", "link", "memory", "durability")
assert all(m.area in AREAS for m in MUTATIONS) and len({m.id for m in MUTATIONS}) == len(MUTATIONS)


def scratch_copy(dest: Path) -> None:
    """The working tree (tracked + untracked files git does not ignore) and the .venv link."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    for rel in filter(None, listing.decode().split("\0")):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    venv = ROOT / ".venv"
    if venv.exists():
        (dest / ".venv").symlink_to(venv.resolve())


def missing_tests(m: Mutation) -> list[str]:
    return [t for t in m.tests if not (ROOT / t.split("::")[0]).exists()]


def run_one(m: Mutation, timeout: float, slow: bool, keep: bool) -> tuple[str, float, str]:
    """Plant m in a fresh scratch copy, run its tests: (verdict, seconds, first failure)."""
    src = (ROOT / m.file).read_text() if (ROOT / m.file).exists() else ""
    if src.count(m.old) != 1:
        return "STALE", 0.0, ""
    tests = [t for t in m.tests if t not in missing_tests(m)]
    if not tests:
        return "NO TESTS", 0.0, ""
    tmp = Path(tempfile.mkdtemp(prefix=f"mut-{m.id}-"))
    t0 = time.monotonic()
    try:
        scratch_copy(tmp)
        target = tmp / m.file
        target.write_text(target.read_text().replace(m.old, m.new, 1))
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               "--basetemp", str(tmp / ".pt"), *tests]
        if not slow:
            cmd += ["-m", "not slow"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout,
                                 env=env)
        except subprocess.TimeoutExpired:
            return "CAUGHT (timeout)", time.monotonic() - t0, ""
        first = next((ln for ln in res.stdout.splitlines() if ln.startswith("FAILED")), "")
        if res.returncode == 0:
            return "SURVIVED", time.monotonic() - t0, ""
        if res.returncode == 1:
            return "CAUGHT", time.monotonic() - t0, first
        tail = (res.stdout + res.stderr).strip().splitlines()
        return f"ERROR (pytest exit {res.returncode})", time.monotonic() - t0, \
            tail[-1] if tail else ""
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _pick(args) -> list[Mutation] | str:
    chosen = MUTATIONS
    if args.area:
        areas = set(args.area.split(","))
        if areas - set(AREAS):
            return (f"unknown area(s): {', '.join(sorted(areas - set(AREAS)))} "
                    f"(areas: {', '.join(AREAS)})")
        chosen = [m for m in chosen if m.area in areas]
    if args.only:
        ids = set(args.only.split(","))
        unknown = ids - {m.id for m in MUTATIONS}
        if unknown:
            return f"unknown mutation id(s): {', '.join(sorted(unknown))}"
        chosen = [m for m in chosen if m.id in ids]
    return chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mutation_score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--area", default="", help=f"comma-separated areas ({', '.join(AREAS)})")
    p.add_argument("--only", default="", help="comma-separated mutation ids")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mutation run")
    p.add_argument("--slow", action="store_true", help="also run tests marked slow")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies")
    args = p.parse_args(argv)
    chosen = _pick(args)
    if isinstance(chosen, str):
        print(f"error: {chosen}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            gone = missing_tests(m)
            print(f"{m.id:<22} {m.area:<10} {m.file:<28} {m.what}"
                  + (f"  [missing: {', '.join(gone)}]" if gone else ""))
        return 0
    results = []
    for i, m in enumerate(chosen, 1):
        verdict, secs, first = run_one(m, args.timeout, args.slow, args.keep)
        results.append((m, verdict))
        print(f"[{i}/{len(chosen)}] {m.id:<22} {verdict:<16} {secs:6.1f} s  {m.what}"
              + (f"\n      {first[:140]}" if first else ""), flush=True)
    planted = [v for _, v in results if v not in ("STALE", "NO TESTS")]
    caught = sum(v.startswith("CAUGHT") for v in planted)
    skipped = len(results) - len(planted)
    print(f"\nmutation score: {caught}/{len(planted)} caught"
          + (f" ({100 * caught / len(planted):.0f}%)" if planted else "")
          + (f"; {skipped} not planted (STALE: text not found once; NO TESTS: test files "
             f"missing)" if skipped else ""))
    for label in ("SURVIVED", "ERROR"):
        ids = [m.id for m, v in results if v.startswith(label)]
        if ids:
            print(f"{label.lower()}: " + ", ".join(ids))
    return 0 if caught == len(planted) else 1


if __name__ == "__main__":
    sys.exit(main())
