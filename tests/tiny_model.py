"""A tiny RANDOM hardened mGRADE model through the real conversion chain, in seconds.

No training: `MGradeNet` with its random initial weights, delays hardened to integers chosen
here (one channel at the span's largest delay, one with only delay 0), every batch-norm given
random running statistics and affines (the identity norm of a fresh network would hide a wrong
fold). It goes through exactly what `python -m mgrade_edge.convert` and `make codegen` call:

    convert.spec.extract -> convert.calibrate.step_feeds (random inputs) ->
    convert.quantize.convert_int8 + finalize -> convert.codegen.generate

and is written as a converted model folder (model.tflite, test_data.npz with int8 x [S, T,
n_in] and y) that the tests' `model_dir` fixtures take in place of the trained digits model.
The reference is the TFLite-Micro interpreter (convert.stream.Streamer): per-step int8 logits
and every state output (the test vectors are written here, by the tests).

Kernel and generator tests use it; tests that need a trained model's accuracy keep the
session's 20-epoch `digits_int8`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TinyConfig:
    """One tiny model: H channels, L layers, span K (largest delay K - 1), N taps."""
    H: int = 8
    L: int = 2
    K: int = 9
    N: int = 3
    conv: bool = True
    rnn: bool = True
    readout: str = "per_step"       # "per_step" | "mean" (the graph's logits are per step)
    n_in: int = 3
    n_classes: int = 4
    zero_delay_layer: int = -1      # this layer's delays are all 0: no ring, constant GATHER
    seed: int = 0
    state_bits: int = 8             # 16: the minGRU state widened to int16 (convert/widen.py)
    gate_bits: int = 16             # with state_bits 16: the gate z's width
    input_bits: int = 8             # 16 (with an int16 state and gate): the minGRU input u too

    @property
    def name(self) -> str:
        kind = "mgrade" if self.conv and self.rnn else "conv" if self.conv else "rnn"
        z = f"-zero{self.zero_delay_layer}" if self.zero_delay_layer >= 0 else ""
        w = f"-s16g{self.gate_bits}" if self.state_bits == 16 else ""
        w += "u16" if self.state_bits == 16 and self.input_bits == 16 else ""
        return f"{kind}-H{self.H}-L{self.L}-K{self.K}-N{self.N}-{self.readout}{z}{w}"


# the configurations the kernel and generator tests run over (all seconds-long)
CONFIGS = [
    TinyConfig(),                                                   # delay conv + minGRU
    TinyConfig(H=16, L=1, K=24, N=4, readout="mean", seed=1),       # wider, longer span
    TinyConfig(H=5, L=3, K=5, N=2, seed=2, zero_delay_layer=1),     # odd H, a ring-less layer
    TinyConfig(H=8, L=2, K=12, N=3, rnn=False, seed=3),             # conv only
    TinyConfig(H=6, L=2, conv=False, readout="mean", seed=4),       # minGRU only
    TinyConfig(H=4, L=1, K=300, N=2, seed=5),                       # delays past uint8 (uint16)
]


def build_net(cfg: TinyConfig):
    """The hardened random MGradeNet of `cfg` (eval mode)."""
    import torch

    from mgrade_edge.training.config import ModelConfig
    from mgrade_edge.training.layers import BatchNormChannels
    from mgrade_edge.training.model import MGradeNet

    torch.manual_seed(cfg.seed)
    mc = ModelConfig(d_model=cfg.H, n_layers=cfg.L, kernel_span=cfg.K, n_taps=cfg.N,
                     use_conv=cfg.conv, use_rnn=cfg.rnn, norm="batch")
    net = MGradeNet(mc, n_in=cfg.n_in, n_classes=cfg.n_classes, readout=cfg.readout)
    gen = torch.Generator().manual_seed(cfg.seed + 100)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, BatchNormChannels):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.3)
                m.weight.copy_(1 + 0.5 * torch.randn(n, generator=gen))
                m.bias.copy_(0.5 * torch.randn(n, generator=gen))
        for i, conv in enumerate(net.delay_convs()):
            if i == cfg.zero_delay_layer:
                pos = torch.zeros(conv.positions.shape)
            else:
                pos = torch.randint(0, mc.span, conv.positions.shape, generator=gen).float()
                pos[0, 0] = mc.span - 1           # one channel reaches the largest delay
                pos[1] = 0                        # one channel reads only the current frame
            conv.positions.copy_(pos)
    net.harden().eval()
    assert net.hardened
    return net


def convert_tiny(cfg: TinyConfig, out: Path, n_calib: int = 4, n_test: int = 3,
                 steps: int | None = None) -> Path:
    """cfg -> converted model folder `out` (model.tflite, test_data.npz, tiny.json).
    Calibration: n_calib random sequences; test: n_test random sequences of `steps` steps
    (default: long enough for every ring to wrap at least twice)."""
    import torch

    from mgrade_edge.convert.calibrate import step_feeds
    from mgrade_edge.convert.quantize import convert_int8, finalize
    from mgrade_edge.convert.spec import extract
    from mgrade_edge.convert.stream import Streamer

    net = build_net(cfg)
    spec = extract(net)
    T = steps or max(12, 2 * cfg.K + 3)
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    xs = torch.randn(n_calib, min(T, 40), cfg.n_in, generator=gen)
    feeds = [f for f, _ in step_feeds(net, spec, xs)]
    raw = convert_int8(spec, feeds)
    model = finalize(raw, spec, {"task": "tiny", "seq_len": T, "kernel_span": cfg.K,
                                 "state_bits": cfg.state_bits})
    if cfg.state_bits == 16:
        from mgrade_edge.convert.quantize import read_metadata
        from mgrade_edge.convert.widen import widen_input, widen_state

        layers = read_metadata(model)["layers"]
        model = widen_state(model, layers, gate16=cfg.gate_bits == 16)
        if cfg.input_bits == 16:
            model = widen_input(model, layers)
    x = torch.randn(n_test, T, cfg.n_in, generator=gen).numpy()
    x_q = Streamer(model, "tflm").quantize_input(x)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(model)
    np.savez_compressed(out / "test_data.npz", x=x_q, y=np.zeros(n_test, np.int64))
    (out / "tiny.json").write_text(json.dumps(asdict(cfg)))
    return out


def reference_steps(model_bytes: bytes, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite-Micro on int8 x_q [S, T, n_in]: per-step logits [S, T, n_out] and the state
    outputs [S, T, bytes] (every graph output after the logits, in graph order: what
    mcu/runtime/tests/model_runner.c prints after the logits)."""
    from mgrade_edge.convert.stream import Streamer

    s = Streamer(model_bytes, "tflm")
    names = [n for n in s.meta["outputs"] if n != "logits"]
    logits, states = [], []
    for seq in x_q:
        lg, raw = s.run(np.ascontiguousarray(seq), return_states=True)
        logits.append(lg)
        states.append(np.stack([np.concatenate([o[n].reshape(-1) for n in names]
                                               + [np.zeros(0, np.int8)]) for _, o in raw]))
    return np.stack(logits).astype(np.int8), np.stack(states).astype(np.int8)


def host_diff(gen_dir: Path, work: Path, x_q: np.ndarray, logits: np.ndarray,
              states: np.ndarray, fast: bool) -> tuple[int, int]:
    """Build the package with mcu/runtime/tests/model_runner.c (host gcc, -Werror -pedantic)
    on the fast or portable path, run x_q; max |LSB| difference of (logits, states)."""
    from benchmarks import mcu_cost as mc

    exe = mc.build_host_runner(gen_dir, work / f"runner_{int(fast)}", fast=fast)
    got = mc.run_host_runner(exe, x_q)
    expect = np.concatenate([logits, states], axis=2)
    assert got.shape == expect.shape, (got.shape, expect.shape)
    d = np.abs(got.astype(np.int32) - expect.astype(np.int32))
    n_out = logits.shape[2]
    return int(d[..., :n_out].max()), int(d[..., n_out:].max()) if d.shape[2] > n_out else 0
