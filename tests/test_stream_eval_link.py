"""host_tools/stream_eval.py as a user runs it (a subprocess) against the real C application
built for the host, behind a real TCP port (tests/link_proxy.py) that may rewrite the device's
replies. Exit codes: 1 only for a device/host logits mismatch; user mistakes exit 2 with one
line saying what to do; a broken device reply exits 3; never a traceback."""
import hashlib
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "fixtures" / "toy_model"
sys.path.insert(0, str(TOY))
sys.path.insert(0, str(ROOT / "tests"))

from mgrade_edge.host_tools import protocol as P  # noqa: E402
from link_proxy import LinkProxy  # noqa: E402
from toy_model import N_IN, N_OUT, ToyModel  # noqa: E402

TOY_REF = f"{TOY / 'toy_model.py'}:ToyModel"


@pytest.fixture(scope="module")
def exe(host_build):
    res, out = host_build
    assert res.returncode == 0, res.stdout + res.stderr
    return out / "mg_host_device"


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_int8")
    (d / "model.tflite").write_bytes((TOY / "model.tflite").read_bytes())
    x = np.random.default_rng(0).integers(-128, 128, (3, 40, N_IN)).astype(np.int8)
    y = np.array([int(np.argmax(ToyModel.run(s).astype(np.int64).sum(0))) for s in x])
    np.savez(d / "test_data.npz", x=x, y=y)
    return d


def _stream_eval(port, model_dir, *extra, timeout=60):
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "host_tools" / "stream_eval.py"),
                          "--port", port, "--model", str(model_dir), "--no-progress", *extra],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    res.wall_s = time.monotonic() - t0
    return res


def _one_line_error(res, code):
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _rewrite_replies(ptype, edit):
    """to_host hook: replace the body of every reply of ptype by edit(body) (valid frame)."""
    def hook(px, pkt, raw):
        if pkt is not None and pkt.type == ptype | P.REPLY:
            return b"\x00" + P.encode_packet(pkt.type, pkt.seq, edit(pkt.body))
        return raw + b"\x00"
    return hook


@pytest.mark.slow
def test_clean_run_exits_0(exe, toy_dir):
    with LinkProxy(exe) as px:
        res = _stream_eval(px.url, toy_dir, "--reference", TOY_REF)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "max |diff| : 0 int8 logits" in res.stdout


@pytest.mark.slow
def test_run_end_count_beyond_n_out_is_a_protocol_error(exe, toy_dir):
    """A RUN_END reply with count > n_out - first (before: a numpy broadcast error, exit 1)."""
    def more(body):
        steps, lo, hi, n_out, first, count = struct.unpack_from("<IIIHHH", body)
        c = count + 3
        return (struct.pack("<IIIHHH", steps, lo, hi, n_out, first, c)
                + body[18:18 + 4 * count] + bytes(12) + body[18 + 4 * count:] + bytes(3))

    with LinkProxy(exe, to_host=_rewrite_replies(P.RUN_END, more)) as px:
        res = _stream_eval(px.url, toy_dir, "--reference", TOY_REF)
    line = _one_line_error(res, 3)
    assert "inconsistent RUN_END reply" in line and "count 13" in line, line


@pytest.mark.slow
def test_hello_max_body_over_240_is_not_trusted(exe, toy_dir):
    """A device claiming max_body 1000 (before: ValueError on encode, exit 1): the host keeps
    to the protocol's 240 bytes and the run is correct."""
    def big(body):
        return body[:2] + struct.pack("<H", 1000) + body[4:]

    with LinkProxy(exe, to_host=_rewrite_replies(P.HELLO, big)) as px:
        res = _stream_eval(px.url, toy_dir, "--reference", TOY_REF)
    assert res.returncode == 0, res.stdout + res.stderr
    assert max(len(h.pkt.body) for h in px.frames("req", P.RUN_CHUNK)) <= P.MAX_BODY


@pytest.mark.slow
def test_reference_that_raises_exits_2(exe, toy_dir, tmp_path):
    ref = tmp_path / "bad_ref.py"
    ref.write_text("class Ref:\n    def __init__(self, d):\n        pass\n"
                   "    def run(self, x):\n        raise RuntimeError('reference exploded')\n")
    with LinkProxy(exe) as px:
        res = _stream_eval(px.url, toy_dir, "--reference", f"{ref}:Ref")
    line = _one_line_error(res, 2)
    assert "host reference failed" in line and "reference exploded" in line, line


@pytest.mark.parametrize("args,what", [(["--timeout", "0"], "--timeout"),
                                       (["--timeout", "nan"], "--timeout"),
                                       (["--timeout", "-2"], "--timeout"),
                                       (["--retries", "-1"], "--retries")])
def test_bad_link_settings_exit_2(toy_dir, args, what):
    res = _stream_eval("socket://127.0.0.1:1", toy_dir, "--reference", TOY_REF, *args)
    line = _one_line_error(res, 2)
    assert line.startswith(f"error: {what} must be"), line


@pytest.mark.parametrize("url", ["socket://127.0.0.1:99999", "socket://127.0.0.1:0",
                                 "socket://localhost", "socket://:4321"])
def test_bad_socket_url_exits_2_with_a_clear_message(toy_dir, url):
    res = _stream_eval(url, toy_dir, "--reference", TOY_REF)
    line = _one_line_error(res, 2)
    assert "HOST:PORT with PORT in 1..65535" in line and "debug|info" not in line, line


@pytest.mark.slow
def test_port_held_by_another_client_says_so(exe, toy_dir):
    """The proxy, like QEMU's UART, serves one client: a second one hears nothing. The user
    is told what may be wrong after 1 s, and the run ends with exit 2 and the same hint; a
    HELLO attempt waits at most 2 s whatever --timeout (for the chunks) says."""
    with LinkProxy(exe) as px:
        holder = P.Device.open(px.url, timeout=1)
        assert holder.hello().n_out == N_OUT
        res = _stream_eval(px.url, toy_dir, "--reference", TOY_REF, "--timeout", "0.5",
                           "--retries", "1")
        slow = _stream_eval(px.url, toy_dir, "--reference", TOY_REF, "--timeout", "10",
                            "--retries", "0")
        holder.close()
    for r in (res, slow):
        line = _one_line_error(r, 2)
        assert "no reply from the device" in line and "no other program is connected" in line
        assert r.stderr.index("waiting for the device") < r.stderr.index("error:")
    assert res.wall_s < 1.0 + 2 * 0.5 + 5
    assert slow.wall_s < 1.0 + 2.0 + 5 < 1.0 + 10


# ----------------------------------------------------------------------------- wide model
WIDE_N_IN, WIDE_N_OUT = 2, 250         # 4 + 250 > 240: a step's logits do not fit a reply
WIDE_C = """/* test fixture written by tests/test_stream_eval_link.py: n_out = %(n_out)d */
#include <stdint.h>
#include "mg_model.h"
#include "mg_model_data.h"
static const mg_model_info_t info = {"wide-fixture", {%(id)s}, %(n_in)d, %(n_out)d, %(macs)d};
void mg_model_init(mg_model_t *m) { m->acc = 0u; }
void mg_model_step(mg_model_t *m, const int8_t *x, int8_t *logits)
{
    uint32_t j;
    m->acc = (m->acc * 3u + (uint8_t)x[0] + 2u * (uint8_t)x[1]) %% 97u;
    for (j = 0; j < %(n_out)du; ++j) {
        logits[j] = (int8_t)((int32_t)((m->acc + 7u * j) %% 255u) - 127);
    }
}
const mg_model_info_t *mg_model_info(void) { return &info; }
"""
WIDE_H = """/* test fixture: the wide model's instance type (mg_model.h) */
#include <stdint.h>
struct mg_model_s { uint32_t acc; };
"""
WIDE_PY = """import numpy as np
class Wide:
    def __init__(self, model_dir):
        pass
    def run(self, x):
        acc, out = 0, np.empty((len(x), %(n_out)d), np.int8)
        for t, f in enumerate(np.asarray(x, np.int8).view(np.uint8).astype(np.int64)):
            acc = (acc * 3 + int(f[0]) + 2 * int(f[1])) %% 97
            out[t] = ((acc + 7 * np.arange(%(n_out)d)) %% 255) - 127
        return out
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A host-built device whose model has 250 outputs, its model dir and its reference."""
    root = tmp_path_factory.mktemp("wide")
    pkg, d = root / "pkg", root / "int8"
    pkg.mkdir()
    d.mkdir()
    (d / "model.tflite").write_bytes(b"wide fixture model")
    mid = hashlib.sha256(b"wide fixture model").digest()[:8]
    fields = dict(n_in=WIDE_N_IN, n_out=WIDE_N_OUT, macs=WIDE_N_IN * WIDE_N_OUT,
                  id=", ".join(f"0x{b:02x}" for b in mid))
    (pkg / "wide_model.c").write_text(WIDE_C % fields)
    (pkg / "mg_model_data.h").write_text(WIDE_H)
    (root / "wide_ref.py").write_text(WIDE_PY % fields)
    res = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "host", f"MODEL_SRC={pkg}",
                          f"HOST_BUILD_DIR={root / 'build'}"], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    x = np.random.default_rng(1).integers(-128, 128, (2, 30, WIDE_N_IN)).astype(np.int8)
    np.savez(d / "test_data.npz", x=x, y=np.array([3, 4]))
    return root / "build" / "mg_host_device", d, f"{root / 'wide_ref.py'}:Wide"


@pytest.mark.slow
def test_logits_that_do_not_fit_suggest_fast(wide):
    exe, d, ref = wide
    with LinkProxy(exe) as px:
        res = _stream_eval(px.url, d, "--reference", ref)
    line = _one_line_error(res, 2)
    assert "do not fit" in line and "use --fast" in line, line
    with LinkProxy(exe) as px:                     # and --fast does work (paged RUN_END)
        res = _stream_eval(px.url, d, "--reference", ref, "--fast")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "max |diff| : 0 int8 logits (last step), 0 in the int32 sums" in res.stdout
    assert len(px.frames("req", P.RUN_END)) == 2 * -(-WIDE_N_OUT // 44)


@pytest.mark.slow
def test_per_step_labels_that_do_not_fit_say_so(wide, tmp_path):
    exe, d, ref = wide
    d2 = tmp_path / "per_step"
    d2.mkdir()
    (d2 / "model.tflite").write_bytes((d / "model.tflite").read_bytes())
    with np.load(d / "test_data.npz") as z:
        np.savez(d2 / "test_data.npz", x=z["x"], y=np.zeros(z["x"].shape[:2], np.int64))
    with LinkProxy(exe) as px:
        res = _stream_eval(px.url, d2, "--reference", ref, "--fast")
    line = _one_line_error(res, 2)
    assert "per-step labels" in line and "do not fit" in line, line
