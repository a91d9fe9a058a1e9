"""The minGRU recurrence over a whole sequence.

h_t = (1 - z_t) * h_{t-1} + z_t * g(h~_t),  z_t = sigmoid(z_pre_t),
g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise (so h stays positive).

All functions take z_pre, h_pre: [B, T, H] float pre-activations and h0: [B, H] (>= 0, None
means zeros) and return h: [B, T, H].
"""
import torch
import torch.nn.functional as F


def g(x):
    """minGRU candidate activation: x + 0.5 (x >= 0), sigmoid(x) (x < 0); always > 0."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x):
    """log(g(x)), computed without forming g for negative x."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def mingru_scan_loop(z_pre, h_pre, h0=None):
    """Plain sequential loop of the recurrence (the ground truth for the tests)."""
    z, cand = torch.sigmoid(z_pre), g(h_pre)
    h = torch.zeros_like(z_pre[:, 0]) if h0 is None else h0
    out = []
    for t in range(z_pre.shape[1]):
        h = (1 - z[:, t]) * h + z[:, t] * cand[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def mingru_scan_log(z_pre, h_pre, h0=None):
    """Heinsen's log-space parallel scan: log h_t = a*_t + logcumsumexp(log b - a*)_t,
    with a*_t = cumsum(log(1 - z)), log b_t = log z_t + log g(h~_t)."""
    log_a = -F.softplus(z_pre)                    # log(1 - z)
    log_b = -F.softplus(-z_pre) + log_g(h_pre)    # log z + log g(h~)
    if h0 is not None:                            # prepend h0 as a first "b" term with a = 1
        log_h0 = torch.log(h0.clamp_min(1e-30)).unsqueeze(1)
        log_a = torch.cat([torch.zeros_like(log_h0), log_a], dim=1)
        log_b = torch.cat([log_h0, log_b], dim=1)
    a_star = torch.cumsum(log_a, dim=1)
    log_h = a_star + torch.logcumsumexp(log_b - a_star, dim=1)
    h = torch.exp(log_h)
    return h[:, 1:] if h0 is not None else h


def mingru_scan(z_pre, h_pre, h0=None):
    """The default training path (the fastest tested implementation)."""
    return mingru_scan_log(z_pre, h_pre, h0)
