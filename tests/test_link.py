"""The serial link against the real C application (mcu/app built for the host, toy model)
behind a real TCP port with a lossy, frame-aware proxy (tests/link_proxy.py): the host
resynchronises after a lost reply instead of reusing a step index, the number of retries is
exactly what was asked for and every copy is answered from the reply cache, a dropped byte is
recovered at once instead of after a full timeout. The device's own rules (the reply cache,
size limits, error frames) are checked on every target by tests/test_conformance.py."""
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "toy_model"))
sys.path.insert(0, str(ROOT / "tests"))

from mgrade_edge.host_tools import protocol as P  # noqa: E402
from link_proxy import LinkProxy  # noqa: E402
from toy_model import N_IN, N_OUT, ToyModel  # noqa: E402


@pytest.fixture(scope="module")
def exe(host_build):
    res, out = host_build
    assert res.returncode == 0, res.stdout + res.stderr
    return out / "mg_host_device"


def _seq(T, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (T, N_IN)).astype(np.int8)


def _u32(v):
    return struct.pack("<I", v)


# ----------------------------------------------------------------------------- host: resync
def _drop_replies(ptype, steps=None, times=None):
    """to_host hook: drop replies of type ptype (with that step count), `times` times."""
    state = {"dropped": 0, "armed": True}

    def hook(px, pkt, raw):
        if (state["armed"] and pkt is not None and pkt.type == ptype | P.REPLY
                and (steps is None or struct.unpack_from("<I", pkt.body)[0] == steps)
                and (times is None or state["dropped"] < times)):
            state["dropped"] += 1
            return b""
        return raw + b"\x00"
    hook.state = state
    return hook


def test_lost_step_replies_never_yield_another_frames_logits(exe):
    """All replies of the STEP at t=2 are lost. The caller goes on with a different frame:
    it must get that frame's logits (before: the cached logits of the lost step)."""
    x = _seq(5, 4)
    ref = ToyModel.run(x)
    with LinkProxy(exe, to_host=_drop_replies(P.STEP, steps=3)) as px:
        dev = P.Device.open(px.url, timeout=0.4, retries=2)
        dev.reset_state()
        for t in range(2):
            np.testing.assert_array_equal(dev.step(x[t]), ref[t])
        try:
            lost = dev.step(x[2])
        except P.DeviceTimeout:
            lost = None
        got = dev.step(x[3])
        np.testing.assert_array_equal(got, ref[3])
        # and the lost step's logits were recovered from the device's state (RUN_END)
        assert lost is not None
        np.testing.assert_array_equal(lost, ref[2])
        assert len(px.frames("req", P.STEP)) == 2 + 3 + 1       # 3 sends of the lost one
        dev.close()


def test_step_with_unknown_outcome_is_not_guessed(exe):
    """The STEP at t=2 executes but its replies and the status query's are lost: the host
    cannot know the device state, says so, and refuses to reuse t on the next step."""
    x = _seq(5, 5)
    ref = ToyModel.run(x)
    drop_step = _drop_replies(P.STEP, steps=3)
    drop_end = _drop_replies(P.RUN_END)

    def hook(px, pkt, raw):
        out = drop_step(px, pkt, raw)
        return drop_end(px, pkt, raw) if out else out

    with LinkProxy(exe, to_host=hook) as px:
        dev = P.Device.open(px.url, timeout=0.3, retries=1)
        dev.reset_state()
        for t in range(2):
            np.testing.assert_array_equal(dev.step(x[t]), ref[t])
        with pytest.raises(P.DeviceTimeout, match="unknown"):
            dev.step(x[2])
        drop_step.state["armed"] = drop_end.state["armed"] = False
        with pytest.raises(P.DeviceReset, match="executed"):
            dev.step(x[3])
        # the client is usable again: a fresh sequence from a reset state
        np.testing.assert_array_equal(dev.step(x[0]), ref[0])
        dev.close()


def test_lost_step_request_is_not_executed_and_may_be_sent_again(exe):
    x = _seq(4, 6)
    ref = ToyModel.run(x)
    state = {"armed": True}

    def lose_step2(px, pkt, raw):
        if state["armed"] and pkt is not None and pkt.type == P.STEP and pkt.body[:4] == _u32(2):
            return b""
        return raw + b"\x00"

    with LinkProxy(exe, to_device=lose_step2) as px:
        dev = P.Device.open(px.url, timeout=0.3, retries=1)
        dev.reset_state()
        for t in range(2):
            dev.step(x[t])
        with pytest.raises(P.DeviceTimeout, match="did not execute it"):
            dev.step(x[2])
        state["armed"] = False
        np.testing.assert_array_equal(dev.step(x[2]), ref[2])
        np.testing.assert_array_equal(dev.step(x[3]), ref[3])
        dev.close()


@pytest.mark.parametrize("step_logits", [False, True])
def test_lost_chunk_replies_resync_the_run(exe, step_logits):
    """All replies of the 2nd RUN_CHUNK are lost (once). Mean readout: the chunk ran, the run
    goes on. Per-step logits: they are gone, so the sequence is run again."""
    x = _seq(100, 7)
    ref = ToyModel.run(x)
    k = (P.MAX_BODY - 4) // (N_OUT if step_logits else N_IN)
    with LinkProxy(exe, to_host=_drop_replies(P.RUN_CHUNK, steps=2 * k, times=3)) as px:
        dev = P.Device.open(px.url, timeout=0.4, retries=2)
        res = dev.run(x, step_logits=step_logits, restarts=1)
        np.testing.assert_array_equal(res.sums, ref.astype(np.int64).sum(0))
        if step_logits:
            np.testing.assert_array_equal(res.step_logits, ref)
        assert len(px.frames("req", P.RUN_BEGIN)) == (2 if step_logits else 1)
        dev.close()


def test_hello_max_body_over_240_is_not_trusted(exe):
    """A device claiming max_body 1000 (before: ValueError on encoding the first chunk)."""
    def big(px, pkt, raw):
        if pkt is not None and pkt.type == P.HELLO | P.REPLY:
            body = pkt.body[:2] + struct.pack("<H", 1000) + pkt.body[4:]
            return b"\x00" + P.encode_packet(pkt.type, pkt.seq, body)
        return raw + b"\x00"

    x = _seq(100, 13)
    with LinkProxy(exe, to_host=big) as px:
        dev = P.Device.open(px.url, timeout=1.0)
        assert dev.hello().max_body == P.MAX_BODY
        res = dev.run(x, restarts=0)
        np.testing.assert_array_equal(res.sums, ToyModel.run(x).astype(np.int64).sum(0))
        assert max(len(h.pkt.body) for h in px.frames("req", P.RUN_CHUNK)) <= P.MAX_BODY
        dev.close()


# ----------------------------------------------------------------------------- retries pinned
@pytest.mark.parametrize("ptype", [P.STEP, P.RUN_CHUNK])
@pytest.mark.parametrize("retries", [0, 2])
def test_exact_retries_answered_from_the_cache(exe, ptype, retries):
    """The replies of one STEP/RUN_CHUNK are lost `retries` times: the host sends it exactly
    retries + 1 times (same bytes), every copy is answered from the cache with the same reply,
    and the device steps once."""
    x = _seq(60, 8)
    ref = ToyModel.run(x)
    k = 1 if ptype == P.STEP else (P.MAX_BODY - 4) // N_IN       # steps per request
    t_lost = 1 if ptype == P.STEP else k                        # the request whose replies drop
    with LinkProxy(exe, to_host=_drop_replies(ptype, steps=t_lost + k, times=retries)) as px:
        dev = P.Device.open(px.url, timeout=0.8, retries=retries)
        dev.hello()                   # (absorbs the BOOT the device sent when it started)
        base = dev.stats["retransmits"]
        if ptype == P.STEP:
            dev.reset_state()
            for t in range(4):
                np.testing.assert_array_equal(dev.step(x[t]), ref[t])
            res = dev.run_end()
            assert res.steps == 4
            np.testing.assert_array_equal(res.sums, ref[:4].astype(np.int64).sum(0))
        else:
            res = dev.run(x, restarts=0)
            assert res.steps == 60
            np.testing.assert_array_equal(res.sums, ref.astype(np.int64).sum(0))
        sent = [h.raw for h in px.frames("req", ptype) if h.pkt.body[:4] == _u32(t_lost)]
        assert len(sent) == retries + 1 and len(set(sent)) == 1
        answers = [h.pkt for h in px.frames("rep") if h.pkt.seq == P.decode_frame(sent[0]).seq]
        assert len(answers) == retries + 1
        assert all(a.type == ptype | P.REPLY and a.body == answers[0].body for a in answers)
        assert len(px.frames("req", P.RUN_END)) == 1              # no resync was needed
        assert dev.stats["retransmits"] - base == retries
        assert not px.frames("req", P.RUN_END)[:-1]              # no resync was needed
        dev.close()


@pytest.mark.parametrize("retries", [0, 2])
def test_exact_retries_then_timeout(exe, retries):
    drop_all = _drop_replies(P.HELLO)
    drop_all.state["armed"] = False
    with LinkProxy(exe, to_host=drop_all) as px:
        dev = P.Device.open(px.url, timeout=0.3, retries=retries)
        dev.hello()                   # (absorbs the BOOT the device sent when it started)
        drop_all.state["armed"] = True
        t0 = time.monotonic()
        with pytest.raises(P.DeviceTimeout, match=f"after {retries + 1} attempt"):
            dev.hello()
        took = time.monotonic() - t0
        sent = [h.raw for h in px.frames("req", P.HELLO) if h.pkt.seq == dev._seq]
        assert len(sent) == retries + 1 and len(set(sent)) == 1
        assert 0.3 * (retries + 1) <= took < 0.3 * (retries + 1) + 1.5
        dev.close()


# ----------------------------------------------------------------------------- dropped bytes
def _drop_a_byte_once(ptype):
    """Hook: drop one byte of the first frame of ptype such that its COBS decoding fails
    while its first 4 bytes (code, version, type, seq) stay intact."""
    state = {"done": False, "seq": None}

    def hook(px, pkt, raw):
        if state["done"] or pkt is None or pkt.type != ptype:
            return raw + b"\x00"
        for p in range(len(raw) - 1, 3, -1):
            cut = raw[:p] + raw[p + 1:]
            try:
                P.cobs_decode(cut)
            except P.FrameError:
                state.update(done=True, seq=pkt.seq)
                return cut + b"\x00"
        raise AssertionError("no byte whose loss breaks COBS")
    hook.state = state
    return hook


def test_dropped_request_byte_is_reported_with_its_seq_and_resent_at_once(exe):
    x = _seq(80, 9)
    hook = _drop_a_byte_once(P.RUN_CHUNK)
    with LinkProxy(exe, to_device=hook) as px:
        dev = P.Device.open(px.url, timeout=10.0, retries=2)
        dev.hello()
        base, bad0 = dev.stats["retransmits"], dev.stats["bad_frames"]
        t0 = time.monotonic()
        res = dev.run(x, restarts=0)
        took = time.monotonic() - t0
        np.testing.assert_array_equal(res.sums, ToyModel.run(x).astype(np.int64).sum(0))
        assert hook.state["done"]
        errs = px.errors()
        assert errs == [(P.E_COBS, P.RUN_CHUNK, 0, hook.state["seq"])], errs
        assert took < 5.0, f"took {took:.2f} s: waited for a timeout"
        assert dev.stats["retransmits"] - base == 1
        dev.close()


def test_dropped_reply_byte_is_resent_at_once(exe):
    x = _seq(80, 10)
    inner = _drop_a_byte_once(P.RUN_CHUNK | P.REPLY)
    with LinkProxy(exe, to_host=inner) as px:
        dev = P.Device.open(px.url, timeout=10.0, retries=2)
        dev.hello()
        base, bad0 = dev.stats["retransmits"], dev.stats["bad_frames"]
        t0 = time.monotonic()
        res = dev.run(x, restarts=0)
        took = time.monotonic() - t0
        np.testing.assert_array_equal(res.sums, ToyModel.run(x).astype(np.int64).sum(0))
        assert inner.state["done"] and took < 5.0, f"took {took:.2f} s: waited for a timeout"
        assert dev.stats["retransmits"] - base == 1 and dev.stats["bad_frames"] - bad0 == 1
        dev.close()


def test_undecodable_seq_still_resends_at_once(exe):
    """A request whose header is damaged (the device cannot tell its seq: ERROR seq 0 or a
    garbage seq) is still sent again at once."""
    x = _seq(30, 11)
    state = {"done": False}

    def cut_header(px, pkt, raw):
        if not state["done"] and pkt is not None and pkt.type == P.RUN_CHUNK:
            state["done"] = True
            return raw[:1] + raw[3:] + b"\x00"      # version and type bytes lost
        return raw + b"\x00"

    with LinkProxy(exe, to_device=cut_header) as px:
        dev = P.Device.open(px.url, timeout=10.0, retries=2)
        dev.hello()
        base, bad0 = dev.stats["retransmits"], dev.stats["bad_frames"]
        t0 = time.monotonic()
        res = dev.run(x, restarts=0)
        took = time.monotonic() - t0
        np.testing.assert_array_equal(res.sums, ToyModel.run(x).astype(np.int64).sum(0))
        assert state["done"] and len(px.errors()) == 1 and px.errors()[0][0] in P.FRAME_ERRORS
        assert took < 5.0, f"took {took:.2f} s: waited for a timeout"
        dev.close()
