"""int8 over long streams and the two quantization hand-offs the other tests cannot see:
what the calibrator feeds at step t against what the streaming step reads at t, state
quantization tying on a model whose state input and output calibrate differently, and the
int8-vs-float drift of a slow integrator over thousands of steps."""
import numpy as np
import pytest
import torch

from mgrade_edge.convert.__main__ import calibration_feeds
from mgrade_edge.convert.calibrate import step_feeds
from mgrade_edge.convert.graph import input_signature, io_names, state_pairs
from mgrade_edge.convert.rings import gather_indices
from mgrade_edge.convert.quantize import convert_int8, finalize, load_flatbuffer
from mgrade_edge.convert.spec import extract
from mgrade_edge.convert.stream import Streamer
from mgrade_edge.convert.tflite_reader import read_tflite
from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.model import MGradeNet


# ---------------------------------------------------------------------------------------------
# calibration vs the step it calibrates

def _layer_inputs(net, x):
    """The parallel path's per-layer inputs [T, H] (the frames each ring holds) and minGRU
    states [T, H] (after step t), an implementation independent of the step path."""
    frames, states = [], []
    with torch.no_grad():
        a = net.encoder(x[None])
        for block in net.blocks:
            frames.append(a[0].numpy())
            u = a + block.conv(a) if block.conv is not None else a
            h = block.rnn(u) if block.rnn is not None else None    # rnn_out linear: out = h
            states.append(None if h is None else h[0].numpy())
            a = block(a)
    return frames, states


def _ring_expected(frames: np.ndarray, t: int, R: int) -> np.ndarray:
    """[R*H] ring at step t: frame t-d at slot (t-d) mod R for d = 1..R, 0 before the start."""
    H = frames.shape[1]
    ring = np.zeros((R, H), np.float32)
    for d in range(1, R + 1):
        if t - d >= 0:
            ring[(t - d) % R] = frames[t - d]
    return ring.reshape(-1)


def test_calibration_feeds_are_the_steps_the_stream_reads(tiny_int8):
    """At every step t the calibrator's ring and state inputs equal the frames and states of
    the parallel float network placed where the streaming step reads them (frame t-d at slot
    (t-d) mod R, state after t-1), and the int8 Streamer's ring at the same t holds the same
    frames up to int8 rounding. An off-by-one in either ring indexing fails this. The model:
    the tiny random one (tests/tiny_model.py), its test inputs dequantized (exact in int8)."""
    from tests.tiny_model import TinyConfig, build_net

    net = build_net(TinyConfig())
    spec = extract(net)
    model = (tiny_int8 / "model.tflite").read_bytes()
    s = Streamer(model, "tflm")
    scale, zp = s.input_quant
    x_q = np.load(tiny_int8 / "test_data.npz")["x"][:2]
    x = torch.from_numpy((x_q.astype(np.float32) - zp) * np.float32(scale))
    rings = [i for i, layer in enumerate(spec.layers) if layer.ring_frames > 0]
    assert rings and max(spec.layers[i].ring_frames for i in rings) < x.shape[1] // 2, \
        "the test needs rings that wrap around within the sequence"
    feeds = list(step_feeds(net, spec, x))
    T = x.shape[1]
    for k in range(len(x)):
        frames, states = _layer_inputs(net, x[k])
        _, steps = s.run(x_q[k], return_states=True)
        for t in range(T):
            feed = feeds[k * T + t][0]
            stream_feed = steps[t][0]
            for i, layer in enumerate(spec.layers):
                if layer.wz is not None:
                    want_h = states[i][t - 1] if t > 0 else np.zeros(spec.channels)
                    np.testing.assert_allclose(feed[f"h{i}"][0], want_h, atol=1e-4,
                                               err_msg=f"h{i} at t={t}")
                if layer.ring_frames == 0:
                    continue
                R = layer.ring_frames
                want = _ring_expected(frames[i], t, R)
                np.testing.assert_allclose(feed[f"ring{i}"][0], want, atol=1e-4,
                                           err_msg=f"calibration ring{i} at t={t}")
                np.testing.assert_array_equal(feed[f"idx{i}"], stream_feed[f"idx{i}"])
                if i == 0:      # layer 0's frames are FC(x): int8 within a couple of LSB
                    scale, zp = s.in_quant[s.inputs[f"ring{i}"]]
                    got = (stream_feed[f"ring{i}"][0].astype(np.float32) - zp) * scale
                    assert np.abs(got - want).max() <= 2.5 * scale, f"stream ring0 at t={t}"


# ---------------------------------------------------------------------------------------------
# quantization tying of state tensors

def test_state_inputs_take_their_outputs_quantization_when_they_differ():
    """A state input calibrated on values unlike its output's (h fed in [-8, -4]) gets the
    scale AND zero point of the output it is fed from, the output keeps its own, and the
    written file streams (TFLite-Micro accepts it)."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=4, n_layers=1, kernel_span=4, n_taps=2, norm="none")
    net = MGradeNet(cfg, 1, 3).eval().harden()
    spec = extract(net)
    layer = spec.layers[0]
    rng = np.random.default_rng(0)
    feeds = []
    for t in range(40):
        feed = {}
        for name, (shape, _) in input_signature(spec).items():
            if name.startswith("idx"):
                feed[name] = gather_indices(layer.delays, t, layer.ring_frames)
            elif name.startswith("h"):
                feed[name] = rng.uniform(-8.0, -4.0, shape).astype(np.float32)
            else:
                feed[name] = rng.normal(0.0, 1.0, shape).astype(np.float32)
        feeds.append(feed)
    raw = convert_int8(spec, feeds)

    def quant(model_bytes):
        g = load_flatbuffer(model_bytes).subgraphs[0]
        ins, outs = io_names(spec)
        q = lambda t: (list(map(float, t.quantization.scale)),     # noqa: E731
                       list(map(int, t.quantization.zeroPoint)))
        return ({n: q(g.tensors[i]) for n, i in zip(ins, g.inputs) if not n.startswith("idx")},
                {n: q(g.tensors[i]) for n, i in zip(outs, g.outputs)})

    raw_in, raw_out = quant(raw)
    assert raw_in["h0"][0] != raw_out["hnew0"][0] and raw_in["h0"][1] != raw_out["hnew0"][1], \
        "precondition: the state input and output must calibrate to different parameters"
    model = finalize(raw, spec, {})
    fin_in, fin_out = quant(model)
    assert fin_out == raw_out                           # outputs keep what they calibrated
    for a, b in state_pairs(spec):
        assert fin_in[a] == raw_out[b], (a, b)
    s = Streamer(model, "tflm")
    x = s.quantize_input(rng.normal(size=(12, 1)).astype(np.float32))
    _, steps = s.run(x, return_states=True)
    for (feed, _), (_, prev_out) in zip(steps[1:], steps[:-1]):
        np.testing.assert_array_equal(feed["h0"], prev_out["hnew0"])


# ---------------------------------------------------------------------------------------------
# a long stream through a slow integrator

LONG_T = 3000
# the gate biases of the 4 minGRU channels: z = sigmoid(b) = 0.0025, 0.0067, 0.018, 0.047
GATE_BIAS = (-6.0, -5.0, -4.0, -3.0)


def _slow_input(n: int, T: int, seed: int) -> torch.Tensor:
    """[n, T, 1]: a noisy square wave with a period of 600-1200 steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    xs = [np.sign(np.sin(2 * np.pi * t / rng.uniform(600, 1200) + rng.uniform(0, 2 * np.pi)))
          * 0.8 + 0.3 * rng.normal(size=T) for _ in range(n)]
    return torch.tensor(np.stack(xs)[..., None], dtype=torch.float32)


def _slow_integrator() -> MGradeNet:
    """One block whose minGRU channels integrate the input with time constants of 20 to 400
    steps (gates from biases only, candidate = g(input))."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=4, n_layers=1, kernel_span=8, n_taps=2, norm="none")
    net = MGradeNet(cfg, 1, 3).eval()
    net.harden()
    with torch.no_grad():
        net.encoder.weight.copy_(torch.tensor([[1.0], [0.7], [-0.8], [1.2]]))
        net.encoder.bias.zero_()
        proj = net.blocks[0].rnn.proj
        proj.weight.zero_()
        proj.weight[4:].copy_(torch.eye(4))
        proj.bias.copy_(torch.tensor(GATE_BIAS + (0.0,) * 4))
    return net


@pytest.fixture(scope="module")
def slow_stream():
    """(int8 model bytes, input [T, 1], float states [T, 4]) of the slow integrator."""
    net = _slow_integrator()
    spec = extract(net)
    feeds = calibration_feeds(net, spec, _slow_input(1, 1500, 1), 1, 0)
    model = finalize(convert_int8(spec, feeds), spec, {})
    x = _slow_input(1, LONG_T, 2)[0]
    state, h_f = net.init_state(1), []
    with torch.no_grad():
        for t in range(LONG_T):
            _, state = net.step(x[t:t + 1], state)
            h_f.append(state["layers"][0]["h"][0].numpy().astype(np.float64))
    return model, x, np.stack(h_f)


def _state_errors(model: bytes, x: torch.Tensor, h_f: np.ndarray) -> list[np.ndarray]:
    """Stream x through TFLite-Micro; per 1,000-step window the mean |h - h_float| per
    channel over the channel's float range."""
    s = Streamer(model, "tflm")
    _, steps = s.run(s.quantize_input(x.numpy()), return_states=True)
    for (feed, _), (_, prev_out) in zip(steps[1:], steps[:-1]):
        assert np.array_equal(feed["h0"], prev_out["hnew0"])      # the state is fed back
    scale, zp = s.out_quant[s.outputs["hnew0"]]
    h_q = np.stack([(out["hnew0"][0].astype(np.float64) - zp) * scale for _, out in steps])
    span = h_f.max(axis=0) - h_f.min(axis=0)
    return [np.abs(h_q[a:a + 1000] - h_f[a:a + 1000]).mean(axis=0) / span
            for a in range(0, len(h_f), 1000)]


@pytest.mark.slow
def test_long_stream_int8_state_drift_is_bounded(slow_stream):
    """3,000 steps through TFLite-Micro: the int8 minGRU state stays within a bound of the
    float state per channel, and the error does not grow along the stream. Measured with
    the int8 state of today (one LSB = 1/255 of the state range): relative mean errors
    0.18-0.24 on the slowest channel (its updates are below one LSB most of the time), 0.05-
    0.07, 0.02-0.03, 0.004 on the faster ones, the same in every 1,000-step window."""
    windows = _state_errors(*slow_stream)
    bound = np.array([0.35, 0.12, 0.06, 0.02])          # per channel, slowest first
    for w, err in enumerate(windows):
        assert (err <= bound).all(), (w, err.round(3))
    assert windows[-1].max() <= 1.5 * windows[0].max() + 0.02, "error grows along the stream"


@pytest.mark.slow
@pytest.mark.parametrize("gate16,input16", [(True, False), (False, False), (True, True)],
                         ids=["gate16", "gate8", "gate16-input16"])
def test_int16_state_path_tracks_slow_integration(slow_stream, gate16, input16):
    """The same stream with the state path rewritten to int16 (convert/widen.py): int16 state
    tensors, still tied. With the gate z in int16 every channel stays within 1% of its float
    range (the int8 state misses the slowest by about 20%); with z on its int8 1/256 grid the
    two slowest gates (z = 0.0025, 0.0067) are off by up to a third, which costs those
    channels 9% and 3% (measured 0.094, 0.027, 0.0065, 0.0011). With the int16 input asked
    for (convert's default): this integrator's gate biases (up to -6 against inputs of a few
    hundredths) would overflow the 16x8 FC's int32 accumulator on u16's scale, so the layer
    keeps its int8 input (reported in `skipped`) and tracks as the int16-gate graph does."""
    from mgrade_edge.convert.quantize import read_metadata
    from mgrade_edge.convert.widen import state_bytes, widen_input, widen_state

    model, x, h_f = slow_stream
    layers = read_metadata(model)["layers"]
    wide = widen_state(model, layers, gate16=gate16)
    if input16:
        skipped: list[int] = []
        wide = widen_input(wide, layers, skipped=skipped)
        m = read_tflite(wide)
        assert skipped == [0]
        assert not any(op.op == "FULLY_CONNECTED" and m.tensors[op.inputs[0]].dtype == np.int16
                       for op in m.operators)
    assert state_bytes(wide) == 2 * state_bytes(model) == 2 * 4
    s = Streamer(wide, "tflm")
    assert s.in_quant[s.inputs["h0"]] == s.out_quant[s.outputs["hnew0"]]
    windows = _state_errors(wide, x, h_f)
    bound = np.full(4, 0.01) if gate16 else np.array([0.15, 0.05, 0.015, 0.005])
    for w, err in enumerate(windows):
        assert (err <= bound).all(), (w, err.round(4))


@pytest.mark.slow
def test_attribution_simulates_the_graph_convert_deploys(slow_stream):
    """benchmarks.int8_attribution's fake-quantization walk, on the 3,000-step slow stream:
    its `all int8` row follows TFLite-Micro's int8 model and its 16-bit state path (the rows
    `int16: state+update+gate_z` and `int16 path, float: G`) follows the model `convert
    --state-bits 16 --gate-bits 16` deploys, each within half an output LSB on average, while
    the two graphs differ by several LSB (measured 0.42 and 0.31 against 3.5 LSB)."""
    from benchmarks.int8_attribution import GROUPS, WIDE_ROWS, FakeQuantStep
    from mgrade_edge.convert.quantize import read_metadata
    from mgrade_edge.convert.widen import widen_state

    model, x, _ = slow_stream
    wide = widen_state(model, read_metadata(model)["layers"], gate16=True)
    tflm = {}
    for name, m in (("int8", model), ("int16", wide)):
        s = Streamer(m, "tflm")
        scale, zp = s.output_quant
        tflm[name] = s.run(s.quantize_input(x.numpy())).astype(np.float64) - zp   # in LSB
    sim = FakeQuantStep(model)
    simulated = {}
    for name, wide_groups in (("int8", set()), ("int16", set(WIDE_ROWS[-1]))):
        sim.quantized, sim.wide = set(GROUPS), wide_groups
        simulated[name] = sim.run(x[None].numpy())[0] / scale
    lsb = lambda a, b: float(np.abs(a - b).mean())                     # noqa: E731
    assert lsb(simulated["int8"], tflm["int8"]) < 0.5
    assert lsb(simulated["int16"], tflm["int16"]) < 0.5
    assert lsb(tflm["int8"], tflm["int16"]) > 2.0                      # the test can tell
    assert lsb(simulated["int8"], tflm["int16"]) > 2.0


def test_attribution_split_candidate_group(slow_stream):
    """--split-cand: the candidate FC's output p becomes its own group `cand_p`, every other
    tensor keeps its group, and the walk with both candidate groups in float is the walk with
    the unsplit `cand` in float (the split only relabels)."""
    from benchmarks.int8_attribution import GROUPS, FakeQuantStep

    model, x, _ = slow_stream
    whole, split = FakeQuantStep(model), FakeQuantStep(model, split_cand=True)
    p = {t for t, g in split.role.items() if g == "cand_p"}
    assert p and "cand_p" not in whole.role.values()
    assert all(whole.role[t] == "cand" for t in p)
    assert {t: g for t, g in split.role.items() if t not in p} == \
        {t: g for t, g in whole.role.items() if t not in p}
    producer = {op.outputs[0]: op.op for op in split.model.operators}
    assert {producer[t] for t in p} == {"FULLY_CONNECTED"}
    xs = x[None, :200].numpy()
    whole.quantized = set(GROUPS) - {"cand"}
    split.quantized = set(GROUPS) - {"cand", "cand_p"}
    assert np.array_equal(whole.run(xs), split.run(xs))
    split.quantized = set(GROUPS) - {"cand"}              # p back on its int8 grid
    assert not np.array_equal(whole.run(xs), split.run(xs))
