"""training/scan.py: the chunked linear-space scan (default), the float64 log-space reference
and the plain loop agree; gradients agree; no NaN/inf; agreement with mingru-pytorch."""
import pytest
import torch

from mgrade_edge.training.scan import (MinGRUScanFn, linear_recurrence, mingru_scan, mingru_scan_chunked,
                           mingru_scan_log, mingru_scan_loop, reverse_linear_recurrence)


def _inputs(B, T, H, h0, dtype=torch.float32, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(B, T, H, generator=gen, dtype=dtype) * scale).requires_grad_()
    h = (torch.randn(B, T, H, generator=gen, dtype=dtype) * scale).requires_grad_()
    s = torch.rand(B, H, generator=gen, dtype=dtype).requires_grad_() if h0 else None
    return z, h, s


def _grads(fn, z, h, s, w):
    leaves = [z, h] + ([s] if s is not None else [])
    out = fn(z, h, s)
    return out, torch.autograd.grad((out * w).sum(), leaves)


@pytest.mark.parametrize("T", [1, 2, 7, 100, 784, 1024])
@pytest.mark.parametrize("h0", [False, True])
def test_default_scan_equals_loop_float32(T, h0):
    z, h, s = _inputs(4, T, 16, h0, seed=T)
    w = torch.randn(4, T, 16)
    ref, gref = _grads(mingru_scan_loop, z, h, s, w)
    out, gout = _grads(mingru_scan, z, h, s, w)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 1e-5
    for a, b in zip(gout, gref):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("chunk", [1, 3, 5, 16, 37, 64])
@pytest.mark.parametrize("h0", [False, True])
def test_chunk_sizes_with_remainder_float64(chunk, h0):
    """Every chunk length, also ones that leave a remainder (T % L != 0), is exact."""
    z, h, s = _inputs(2, 37, 3, h0, dtype=torch.float64, seed=chunk)
    w = torch.randn(2, 37, 3, dtype=torch.float64)
    ref, gref = _grads(mingru_scan_loop, z, h, s, w)
    out, gout = _grads(lambda a, b, c: mingru_scan_chunked(a, b, c, chunk), z, h, s, w)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    for a, b in zip(gout, gref):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_linear_recurrences_match_naive():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(3, 50, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 50, 4, generator=gen, dtype=torch.float64)
    h0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    for chunk in (None, 1, 6, 7, 50):
        h, ref = linear_recurrence(a, b, h0, chunk), []
        prev = h0
        for t in range(50):
            prev = a[:, t] * prev + b[:, t]
            ref.append(prev)
        assert torch.allclose(h, torch.stack(ref, 1), atol=1e-12)
        g, acc, ref = reverse_linear_recurrence(a, b, chunk), torch.zeros(3, 4).double(), []
        for t in range(49, -1, -1):
            acc = b[:, t] + (a[:, t + 1] * acc if t < 49 else 0)
            ref.append(acc)
        assert torch.allclose(g, torch.stack(ref[::-1], 1), atol=1e-12)


def test_gradcheck_float64():
    z, h, s = _inputs(2, 11, 3, True, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: MinGRUScanFn.apply(a, b, c, 4), (z, h, s))


@pytest.mark.parametrize("T", [784, 1500])
@pytest.mark.parametrize("h0", [False, True])
def test_log_reference_equals_loop(T, h0):
    """The log-space reference computes in float64 inside: 1e-5 at any length (in float32 it
    drifts to ~4e-4 by T = 1500)."""
    z, h, s = _inputs(2, T, 8, h0, seed=3)
    w = torch.randn(2, T, 8)
    ref, gref = _grads(mingru_scan_loop, z, h, s, w)
    out, gout = _grads(mingru_scan_log, z, h, s, w)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 1e-5
    for a, b in zip(gout, gref):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("fn", [mingru_scan, mingru_scan_log])
@pytest.mark.parametrize("mode", ["random30", "plus30", "minus30"])
def test_no_nan_long_extreme(fn, mode):
    T, H = 4096, 8
    z, h, s = _inputs(2, T, H, True, scale=30.0, seed=5)
    with torch.no_grad():
        z.clamp_(-30, 30), h.clamp_(-30, 30)
        if mode != "random30":
            z.fill_(30.0 if mode == "plus30" else -30.0)
    out = fn(z, h, s)
    out.sum().backward()
    for t in (out, z.grad, h.grad, s.grad):
        assert torch.isfinite(t).all()
    # the chunked scan stays on the loop even here
    if fn is mingru_scan:
        ref = mingru_scan_loop(z.detach(), h.detach(), s.detach())
        assert (out.detach() - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


# -- agreement with mingru-pytorch (Feng et al.'s minGRU, lucidrains' implementation) ---------

def _peer_and_ours(H, dtype):
    """mingru-pytorch minGRU(dim=H, expansion_factor=1.0): to_hidden_and_gate = Linear(H, 2H,
    bias=False) with rows [0, H) = hidden (h~) and [H, 2H) = gate (z); no output projection
    at expansion 1.0 (to_out = Identity). Ours: rows [0, H) = z_pre, [H, 2H) = h_pre."""
    from minGRU_pytorch import minGRU
    torch.manual_seed(0)
    peer = minGRU(dim=H, expansion_factor=1.0).to(dtype)
    assert isinstance(peer.to_out, torch.nn.Identity)
    ours = torch.nn.Linear(H, 2 * H).to(dtype)
    with torch.no_grad():
        w = peer.to_hidden_and_gate.weight
        ours.weight.copy_(torch.cat([w[H:], w[:H]], dim=0))
        ours.bias.zero_()
    return peer, ours


@pytest.mark.parametrize("dtype,T,tol", [(torch.float32, 64, 1e-5), (torch.float64, 784, 1e-5)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_mingru_pytorch(dtype, T, tol, with_h0):
    """Same weights -> same outputs and input gradients. float32 at T = 64; at T = 784 the
    peer's float32 log-space scan itself is off the exact recurrence by more than 1e-5, so the
    long case compares in float64 (both modules in double)."""
    H = 16
    peer, ours = _peer_and_ours(H, dtype)
    x = torch.randn(3, T, H, dtype=dtype, requires_grad=True)
    h0 = torch.rand(3, H, dtype=dtype) + 0.1 if with_h0 else None
    y_peer = peer(x, prev_hidden=h0.unsqueeze(1) if with_h0 else None)
    (g_peer,) = torch.autograd.grad(y_peer.sum(), x)
    z_pre, h_pre = ours(x).chunk(2, dim=-1)
    y_ours = mingru_scan(z_pre, h_pre, h0)
    (g_ours,) = torch.autograd.grad(y_ours.sum(), x)
    assert (y_ours - y_peer).abs().max() <= tol
    assert (g_ours - g_peer).abs().max() <= 1e-4 * max(1.0, g_peer.abs().max().item())
