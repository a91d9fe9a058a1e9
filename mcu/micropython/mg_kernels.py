"""int8 kernels of the MicroPython model package, TFLite-Micro reference arithmetic.

Counterpart of mcu/runtime/mg_kernels.c (the per-op kernels) and of mg_delay.c / mg_mingru.c
(the fused steps delay8 and mingru8): the same operations in the same order. The loops
whose values stay within 32 bits (dot products, gathers, copies, table look-ups) are
`@micropython.viper`, and so is every requantization (mbqm32: the 32 x 32 -> 64-bit SRDHM
product on 15-bit limbs, so that no value leaves int32 on a 32-bit port and no long int is
ever allocated). Broadcasting ADD/SUB/MUL (rare) keep plain `@micropython.native` loops over
Python ints with mg_quant's arithmetic, exact on every port.

Buffers: int8 tensors are array('b') objects or memoryviews of them (viper reads their raw
bytes; Python code reads signed values), weights are bytes, int32 scratch is array('i').
Viper functions take at most 4 arguments (a conservative bound for every port's native
emitter); the other parameters come as raw little-endian bytes: `p` int16 values (read back
sign-extended), `q` int32 values read through ptr16 halves (viper's ptr32 load zero-extends
on 64-bit ports and sign-extends on 32-bit ones, so halves are read the same everywhere).
"""
import micropython

from mg_quant import mbqm


@micropython.viper
def fc_acc(acc: ptr32, x: ptr8, w: ptr8, p: ptr16):
    """acc[b*n_out + o] = sum_d (w[o, d] + f_off) * (x[b, d] + x_off).
    p = (batches, depth, n_out, x_off, f_off); f_off is 0 for per-channel weights."""
    batches = int(p[0])
    depth = int(p[1])
    nout = int(p[2])
    xo = (int(p[3]) ^ 0x8000) - 0x8000
    fo = (int(p[4]) ^ 0x8000) - 0x8000
    b = 0
    while b < batches:
        xb = b * depth
        o = 0
        while o < nout:
            wb = o * depth
            s = 0
            d = 0
            while d < depth:
                s += (((int(w[wb + d]) ^ 0x80) - 0x80) + fo) * (((int(x[xb + d]) ^ 0x80) - 0x80) + xo)
                d += 1
            acc[b * nout + o] = s
            o += 1
        b += 1


@micropython.viper
def dw_acc(acc: ptr32, x: ptr8, w: ptr8, p: ptr16):
    """DEPTHWISE_CONV_2D accumulators (bias excluded), output order [b, oy, ox, oc].
    p = (batches, in_h, in_w, in_c, filt_h, filt_w, out_h, out_w, out_c, depth_multiplier,
    stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w, x_off)."""
    nb = int(p[0])
    ih = int(p[1])
    iw = int(p[2])
    ic = int(p[3])
    fh = int(p[4])
    fw = int(p[5])
    oh = int(p[6])
    ow = int(p[7])
    oc = int(p[8])
    dm = int(p[9])
    sh = int(p[10])
    sw = int(p[11])
    dh = int(p[12])
    dwl = int(p[13])
    ph = int(p[14])
    pw = int(p[15])
    xo = (int(p[16]) ^ 0x8000) - 0x8000
    b = 0
    while b < nb:
        oy = 0
        while oy < oh:
            ox = 0
            while ox < ow:
                x0 = ox * sw - pw
                y0 = oy * sh - ph
                c = 0
                while c < ic:
                    m = 0
                    while m < dm:
                        ch = m + c * dm
                        s = 0
                        fy = 0
                        while fy < fh:
                            y = y0 + dh * fy
                            if 0 <= y and y < ih:
                                fx = 0
                                while fx < fw:
                                    xx = x0 + dwl * fx
                                    if 0 <= xx and xx < iw:
                                        iv = (int(x[((b * ih + y) * iw + xx) * ic + c]) ^ 0x80) - 0x80
                                        fv = (int(w[(fy * fw + fx) * oc + ch]) ^ 0x80) - 0x80
                                        s += fv * (iv + xo)
                                    fx += 1
                            fy += 1
                        acc[((b * oh + oy) * ow + ox) * oc + ch] = s
                        m += 1
                    c += 1
                ox += 1
            oy += 1
        b += 1


@micropython.viper
def lut8(out: ptr8, x: ptr8, table: ptr8, n: int):
    """out[i] = table[x[i] as a raw byte]: any int8 -> int8 function of one input."""
    i = 0
    while i < n:
        out[i] = table[x[i]]
        i += 1


@micropython.native
def add_sub(out, a, b, n, maps, p, subtract):
    """ADD / SUB with TFLM's left-shifted common scale. p = (left_shift, off1, mult1, shift1,
    off2, mult2, shift2, out_off, out_mult, out_shift, act_min, act_max); maps = None or
    (index map of a, index map of b) for broadcasting. Each rescale is
    mg_quant.mbqm_small, inlined (shifts <= 0, multipliers >= 0)."""
    ls, o1, m1, s1, o2, m2, s2, oo, mo, so, lo, hi = p
    r1, r2, ro = -s1, -s2, -so
    k1, k2, ko = (1 << r1) - 1, (1 << r2) - 1, (1 << ro) - 1
    h1, h2, ho = k1 >> 1, k2 >> 1, ko >> 1
    for i in range(n):
        if maps is None:
            x1, x2 = a[i], b[i]
        else:
            x1, x2 = a[maps[0][i]], b[maps[1][i]]
        v = ((o1 + x1) << ls) * m1
        v = (v + 0x40000000) >> 31 if v >= 0 else -((0x3FFFFFFF - v) >> 31)
        t = v & k1
        v >>= r1
        if t > h1 + (1 if v < 0 else 0):
            v += 1
        w = ((o2 + x2) << ls) * m2
        w = (w + 0x40000000) >> 31 if w >= 0 else -((0x3FFFFFFF - w) >> 31)
        t = w & k2
        w >>= r2
        if t > h2 + (1 if w < 0 else 0):
            w += 1
        v = (v - w if subtract else v + w) * mo
        v = (v + 0x40000000) >> 31 if v >= 0 else -((0x3FFFFFFF - v) >> 31)
        t = v & ko
        v >>= ro
        if t > ho + (1 if v < 0 else 0):
            v += 1
        v += oo
        out[i] = lo if v < lo else (hi if v > hi else v)


@micropython.native
def mul(out, a, b, n, maps, p):
    """MUL. p = (off1, off2, out_off, out_mult, out_shift, act_min, act_max)."""
    o1, o2, oo, mo, so, lo, hi = p
    for i in range(n):
        if maps is None:
            x1, x2 = a[i], b[i]
        else:
            x1, x2 = a[maps[0][i]], b[maps[1][i]]
        v = oo + mbqm((o1 + x1) * (o2 + x2), mo, so)
        out[i] = lo if v < lo else (hi if v > hi else v)


@micropython.native
def min_max(out, a, b, n, maps, is_max):
    """MINIMUM / MAXIMUM (no requantization: TFLM requires equal quantization)."""
    for i in range(n):
        if maps is None:
            x1, x2 = a[i], b[i]
        else:
            x1, x2 = a[maps[0][i]], b[maps[1][i]]
        out[i] = (x1 if x1 > x2 else x2) if is_max else (x1 if x1 < x2 else x2)


@micropython.viper
def gather(out: ptr8, src: ptr8, idx: ptr32, p: ptr16) -> int:
    """GATHER rows of p[3] bytes: out[b, o, c] = src[b, o, idx[b, c]]. p = (batch, outer,
    axis, row_bytes, coords). An index outside 0..axis-1 gives a zero row and returns -1."""
    nb = int(p[0])
    outer = int(p[1])
    axis = int(p[2])
    row = int(p[3])
    nc = int(p[4])
    status = 0
    b = 0
    while b < nb:
        o = 0
        while o < outer:
            base = (b * outer + o) * axis
            c = 0
            while c < nc:
                k = int(idx[b * nc + c])
                dst = ((b * outer + o) * nc + c) * row
                j = 0
                if k < 0 or k >= axis:
                    while j < row:
                        out[dst + j] = 0
                        j += 1
                    status = -1
                else:
                    s = (base + k) * row
                    while j < row:
                        out[dst + j] = src[s + j]
                        j += 1
                c += 1
            o += 1
        b += 1
    return status


@micropython.viper
def copy8(dst: ptr8, src: ptr8, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


def concat(out, inputs, outer, sizes):
    """CONCATENATION: `outer` rounds of copying sizes[k] bytes from each input in turn
    (byte copies through memoryviews: no temporary copies of the inputs)."""
    dst = memoryview(out)
    pos = 0
    for r in range(outer):
        for k in range(len(inputs)):
            n = sizes[k]
            src = inputs[k] if r == 0 else memoryview(inputs[k])[r * n:]
            copy8(dst[pos:] if pos else dst, src, n)
            pos += n


@micropython.viper
def fill8(dst: ptr8, v: int, n: int):
    """dst[0..n) = v (an int8 value)."""
    i = 0
    while i < n:
        dst[i] = v
        i += 1


# ---- requantization in viper, 32-bit safe -----------------------------------------------------
# SRDHM(x, m) = round(x * m / 2^31) for x int32, 0 <= m < 2^31 is computed on 15-bit limbs of
# |x| and m, so every intermediate stays within int32 on any port (tests/mpy_sim32.py checks
# this in CPython); the rounding shifts build their masks without 1 << 31. Parameters come as
# int32 bytes read through ptr16 halves (sign-correct on 32- and 64-bit ports alike).

@micropython.viper
def mbqm32(x: ptr16, n: int, q: ptr16):
    """In place on int32 x[0..n): x[i] = mbqm(x[i] + bias[c], mult[c], shift[c]), c = i % nch
    (mg_quant.mbqm). q = int32 (nch, per_channel, has_bias, bias[nch] if has_bias,
    mult[k], shift[k])), k = nch if per_channel else 1."""
    nch = int(q[0])
    per = int(q[2])
    hb = int(q[4])
    kb = 6
    km = kb + (2 * nch if hb else 0)
    ks = km + (2 * nch if per else 2)
    i = 0
    c = 0
    while i < n:
        v = ((((int(x[2 * i + 1]) ^ 0x8000) - 0x8000)) << 16) | int(x[2 * i])
        if hb:
            v += ((((int(q[kb + 2 * c + 1]) ^ 0x8000) - 0x8000)) << 16) | int(q[kb + 2 * c])
        j = 2 * c if per else 0
        m = (int(q[km + j + 1]) << 16) | int(q[km + j])
        s = ((((int(q[ks + j + 1]) ^ 0x8000) - 0x8000)) << 16) | int(q[ks + j])
        r = 0
        if s > 0:                             # v * 2^s wrapped to int32, without overflow
            k = 32 - s
            t = v & (((1 << (k - 1)) - 1) * 2 + 1)
            h = (1 << (k - 1)) - 1
            if t > h:
                t = t - h - h - 2
            v = t << s
        else:
            r = 0 - s
        # SRDHM: (|v| * m + 2^30 (v >= 0) or 2^30 - 1 (v < 0)) >> 31 on 15-bit limbs
        neg = v < 0
        if neg:
            if v + 1073741823 + 1073741823 + 1 < 0:     # v == -2^31: |v| = 2^31
                a0 = 0
                a1 = 0
                a2 = 2
            else:
                v = 0 - v
                a0 = v & 0x7FFF
                a1 = (v >> 15) & 0x7FFF
                a2 = v >> 30
            c0 = 0x7FFF
            c1 = 0x7FFF
            c2 = 0
        else:
            a0 = v & 0x7FFF
            a1 = (v >> 15) & 0x7FFF
            a2 = v >> 30
            c0 = 0
            c1 = 0
            c2 = 1
        m0 = m & 0x7FFF
        m1 = (m >> 15) & 0x7FFF
        m2 = m >> 30
        col = a0 * m0 + c0
        col = a0 * m1 + a1 * m0 + c1 + (col >> 15)
        col = a0 * m2 + a1 * m1 + a2 * m0 + c2 + (col >> 15)
        v = (col >> 1) + ((a1 * m2 + a2 * m1) << 14) + ((a2 * m2) << 29)
        if neg:
            v = 0 - v
        if r > 0:                             # RoundingDivideByPOT(v, r)
            mask = ((1 << (r - 1)) - 1) * 2 + 1
            rem = v & mask
            thr = mask >> 1
            if v < 0:
                thr += 1
            v = v >> r
            if rem > thr:
                v += 1
        x[2 * i] = v
        x[2 * i + 1] = v >> 16
        i += 1
        c += 1
        if c == nch:
            c = 0


@micropython.viper
def clamp8(out: ptr8, x: ptr16, q: ptr16):
    """out[i] = clamp(x[i] + out_off, act_min, act_max) for int32 x. q = int32 (n,
    out_off, act_min, act_max))."""
    n = int(q[0])
    off = (((int(q[3]) ^ 0x8000) - 0x8000) << 16) | int(q[2])
    lo = (((int(q[5]) ^ 0x8000) - 0x8000) << 16) | int(q[4])
    hi = (((int(q[7]) ^ 0x8000) - 0x8000) << 16) | int(q[6])
    i = 0
    while i < n:
        v = ((((int(x[2 * i + 1]) ^ 0x8000) - 0x8000)) << 16) | int(x[2 * i])
        v += off
        if v < lo:
            v = lo
        if v > hi:
            v = hi
        out[i] = v
        i += 1


@micropython.viper
def widen(u: ptr16, a: ptr8, b: ptr8, q: ptr16):
    """int32 u[i] from int8 inputs. q = int32 (n, mode, off1, off2, left_shift):
    mode 0: (off1 + a[i]) << left_shift (ADD/SUB input), mode 1: (off1 + a[i]) * (off2 + b[i])
    (MUL); b is ignored in mode 0."""
    n = int(q[0])
    mode = int(q[2])
    o1 = (((int(q[5]) ^ 0x8000) - 0x8000) << 16) | int(q[4])
    o2 = (((int(q[7]) ^ 0x8000) - 0x8000) << 16) | int(q[6])
    ls = int(q[8])
    i = 0
    while i < n:
        x = ((int(a[i]) ^ 0x80) - 0x80) + o1
        if mode == 0:
            v = x << ls
        else:
            v = x * (((int(b[i]) ^ 0x80) - 0x80) + o2)
        u[2 * i] = v
        u[2 * i + 1] = v >> 16
        i += 1


@micropython.viper
def combine(u: ptr16, w: ptr16, n: int, sub: int):
    """int32 u[i] = u[i] + w[i] (sub == 0) or u[i] - w[i]."""
    i = 0
    while i < n:
        x = ((((int(u[2 * i + 1]) ^ 0x8000) - 0x8000)) << 16) | int(u[2 * i])
        y = ((((int(w[2 * i + 1]) ^ 0x8000) - 0x8000)) << 16) | int(w[2 * i])
        if sub:
            v = x - y
        else:
            v = x + y
        u[2 * i] = v
        u[2 * i + 1] = v >> 16
        i += 1


# ---- the fused steps of the step program (convert/steps.py) ---------------------------------
# One call per layer and step, channel by channel, as mcu/runtime/mg_delay.c mg_delay_step_s8
# and mg_mingru.c mg_mingru_step_s8 compute them. Every requantization is mbqm32's SRDHM on
# 15-bit limbs, written out once inside each kernel (viper has no inlining; a call per value
# would cost more than the arithmetic). Parameters are int32 read through ptr16 halves, as
# above; the layout is written by convert/codegen_micropython.py (_delay_params, _mingru_params).

@micropython.viper
def delay8(out: ptr8, frame: ptr8, t: int, lay):
    """A layer's delay convolution on its trimmed ring, then the frame written into it
    (mg_delay_step_s8): channel c keeps len_c past frames at ring[off_c:]; tap e reads frame
    t - d (d = delay[e, c]; d == 0: frame[c]) at slot (t - d) mod len_c; out[c] = the
    requantized, clamped sum_e filter[e, c] * (tap + in_off) + bias[c]; then frame[c] goes to
    slot t mod len_c. t: the step counter (wrapped at a common multiple of every len_c).
    lay = (ring, params): params int32 (H, N, in_off, out_off, act_min, act_max,
    delay index (int16 units), filter byte offset, then per channel (len, off, bias, mult,
    shift)), the delays uint16 [N, H] and the filter int8 [N, H]."""
    ring = ptr8(lay[0])
    q = ptr16(lay[1])
    qb = ptr8(lay[1])
    H = int(q[0])
    N = int(q[2])
    xo = (((int(q[5]) ^ 0x8000) - 0x8000) << 16) | int(q[4])
    oo = (((int(q[7]) ^ 0x8000) - 0x8000) << 16) | int(q[6])
    lo = (((int(q[9]) ^ 0x8000) - 0x8000) << 16) | int(q[8])
    hi = (((int(q[11]) ^ 0x8000) - 0x8000) << 16) | int(q[10])
    di = (int(q[13]) << 16) | int(q[12])
    fi = (int(q[15]) << 16) | int(q[14])
    c = 0
    while c < H:
        k = 16 + 10 * c
        ln = (int(q[k + 1]) << 16) | int(q[k])
        off = (int(q[k + 3]) << 16) | int(q[k + 2])
        pos = 0
        if ln > 0:
            pos = t % ln
        cur = (int(frame[c]) ^ 0x80) - 0x80
        v = 0
        e = 0
        while e < N:
            d = int(q[di + e * H + c])
            x = cur
            if d != 0:
                if pos >= d:
                    x = (int(ring[off + pos - d]) ^ 0x80) - 0x80
                else:
                    x = (int(ring[off + pos + ln - d]) ^ 0x80) - 0x80
            v += ((int(qb[fi + e * H + c]) ^ 0x80) - 0x80) * (x + xo)
            e += 1
        v += (((int(q[k + 5]) ^ 0x8000) - 0x8000) << 16) | int(q[k + 4])
        m = (int(q[k + 7]) << 16) | int(q[k + 6])
        s = (((int(q[k + 9]) ^ 0x8000) - 0x8000) << 16) | int(q[k + 8])
        # ---- v = mbqm(v, m, s): as mbqm32 ----
        r = 0
        if s > 0:
            kk = 32 - s
            tt = v & (((1 << (kk - 1)) - 1) * 2 + 1)
            hh = (1 << (kk - 1)) - 1
            if tt > hh:
                tt = tt - hh - hh - 2
            v = tt << s
        else:
            r = 0 - s
        neg = v < 0
        if neg:
            if v + 1073741823 + 1073741823 + 1 < 0:
                a0 = 0
                a1 = 0
                a2 = 2
            else:
                v = 0 - v
                a0 = v & 0x7FFF
                a1 = (v >> 15) & 0x7FFF
                a2 = v >> 30
            n0 = 0x7FFF
            n1 = 0x7FFF
            n2 = 0
        else:
            a0 = v & 0x7FFF
            a1 = (v >> 15) & 0x7FFF
            a2 = v >> 30
            n0 = 0
            n1 = 0
            n2 = 1
        m0 = m & 0x7FFF
        m1 = (m >> 15) & 0x7FFF
        m2 = m >> 30
        col = a0 * m0 + n0
        col = a0 * m1 + a1 * m0 + n1 + (col >> 15)
        col = a0 * m2 + a1 * m1 + a2 * m0 + n2 + (col >> 15)
        v = (col >> 1) + ((a1 * m2 + a2 * m1) << 14) + ((a2 * m2) << 29)
        if neg:
            v = 0 - v
        if r > 0:
            mask = ((1 << (r - 1)) - 1) * 2 + 1
            rem = v & mask
            thr = mask >> 1
            if v < 0:
                thr += 1
            v = v >> r
            if rem > thr:
                v += 1
        # ---- end mbqm ----
        v += oo
        if v < lo:
            v = lo
        if v > hi:
            v = hi
        out[c] = v
        if ln > 0:
            ring[off + pos] = frame[c]
        c += 1


@micropython.viper
def mingru8(h: ptr8, u: ptr8, w: ptr8, q: ptr16):
    """A layer's int8 minGRU step, channel by channel, the state h [H] updated in place
    (mg_mingru_step_s8): z = LZ[FC_z(u)], p = FC_p(u), g = ADD(r, LP[min(p, minc)]) with
    r = RELU-part (its own FC, the candidate's dot product, or p; then the RELU table),
    h = ADD(h, MUL(z, SUB(g, h))). u [D] int8 must not alias h.
    w: bytes holding the FC weights [H, D] (gate, candidate, RELU FC), the 256-entry tables
    LZ, LP, LR and the MINIMUM constant [H]. q: int32 (H, D, has RELU FC, RELU FC shares
    the candidate's dot, has RELU table, byte offsets of wz wp wr LZ LP LR minc; then per FC
    (gate, cand, relu): in_off, f_off, out_off, act_min, act_max, bias [H], mult [H],
    shift [H]; then ADD g, SUB, ADD h (left_shift, off1, mult1, shift1, off2, mult2, shift2,
    out_off, out_mult, out_shift, act_min, act_max) with MUL (off1, off2, out_off,
    out_mult, out_shift, act_min, act_max) between SUB and ADD h)."""
    H = int(q[0])
    D = int(q[2])
    rfc = int(q[4])
    shared = int(q[6])
    rt = int(q[8])
    owz = (int(q[11]) << 16) | int(q[10])
    owp = (int(q[13]) << 16) | int(q[12])
    owr = (int(q[15]) << 16) | int(q[14])
    olz = (int(q[17]) << 16) | int(q[16])
    olp = (int(q[19]) << 16) | int(q[18])
    olr = (int(q[21]) << 16) | int(q[20])
    omn = (int(q[23]) << 16) | int(q[22])
    fcs = 5 + 3 * H                       # int32 per FC block
    fb0 = 12
    xz = (((int(q[2 * fb0 + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * fb0])
    fz = (((int(q[2 * fb0 + 3]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * fb0 + 2])
    fb1 = fb0 + fcs
    xp = (((int(q[2 * fb1 + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * fb1])
    fp = (((int(q[2 * fb1 + 3]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * fb1 + 2])
    fb2 = fb1 + fcs
    xr = (((int(q[2 * fb2 + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * fb2])
    fr = (((int(q[2 * fb2 + 3]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * fb2 + 2])
    own = 0
    if rfc and not shared:
        own = 1
    eb = fb2 + fcs                        # ADD g, SUB, MUL, ADD h
    c = 0
    while c < H:
        hc = (int(h[c]) ^ 0x80) - 0x80
        dz = 0
        dp = 0
        dr = 0
        bz = owz + c * D
        bp = owp + c * D
        br = owr + c * D
        d = 0
        while d < D:
            x = (int(u[d]) ^ 0x80) - 0x80
            dz += (((int(w[bz + d]) ^ 0x80) - 0x80) + fz) * (x + xz)
            dp += (((int(w[bp + d]) ^ 0x80) - 0x80) + fp) * (x + xp)
            if own:
                dr += (((int(w[br + d]) ^ 0x80) - 0x80) + fr) * (x + xr)
            d += 1
        if shared:
            dr = dp
        z = 0
        r = 0
        qv = 0
        g = 0
        dd = 0
        mm = 0
        e1 = 0
        e2 = 0
        ab = 0
        jj = 0
        k = 0
        while k < 13:
            # ---- select the value v and the multiplier/shift indices of stage k ----
            if k < 3:
                fb = fb0 + k * fcs
                v = dz
                if k == 1:
                    v = dp
                elif k == 2:
                    v = dr
                i = fb + 5 + c
                v += (((int(q[2 * i + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * i])
                mi = i + H
                si = mi + H
            elif k == 9:                  # MUL(z, SUB)
                ab = eb + 24
                o1 = (((int(q[2 * ab + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * ab])
                o2 = (((int(q[2 * ab + 3]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * ab + 2])
                v = (o1 + z) * (o2 + dd)
                mi = ab + 3
                si = ab + 4
            else:
                j = k - 3
                if k > 9:
                    j = k - 4
                if j < 3:                 # ADD g = r + q
                    ab = eb
                    jj = j
                    x1 = r
                    x2 = qv
                elif j < 6:               # SUB g - h
                    ab = eb + 12
                    jj = j - 3
                    x1 = g
                    x2 = hc
                else:                     # ADD h + MUL
                    ab = eb + 31
                    jj = j - 6
                    x1 = hc
                    x2 = mm
                ls = int(q[2 * ab])
                if jj == 0:
                    o1 = (((int(q[2 * ab + 3]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * ab + 2])
                    v = (o1 + x1) << ls
                    mi = ab + 2
                elif jj == 1:
                    o2 = (((int(q[2 * ab + 9]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * ab + 8])
                    v = (o2 + x2) << ls
                    mi = ab + 5
                else:
                    v = e1 + e2
                    if j == 5:
                        v = e1 - e2
                    mi = ab + 8
                si = mi + 1
            m = (int(q[2 * mi + 1]) << 16) | int(q[2 * mi])
            s = (((int(q[2 * si + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * si])
            # ---- v = mbqm(v, m, s): as mbqm32 ----
            rr = 0
            if s > 0:
                kk = 32 - s
                tt = v & (((1 << (kk - 1)) - 1) * 2 + 1)
                hh = (1 << (kk - 1)) - 1
                if tt > hh:
                    tt = tt - hh - hh - 2
                v = tt << s
            else:
                rr = 0 - s
            neg = v < 0
            if neg:
                if v + 1073741823 + 1073741823 + 1 < 0:
                    a0 = 0
                    a1 = 0
                    a2 = 2
                else:
                    v = 0 - v
                    a0 = v & 0x7FFF
                    a1 = (v >> 15) & 0x7FFF
                    a2 = v >> 30
                n0 = 0x7FFF
                n1 = 0x7FFF
                n2 = 0
            else:
                a0 = v & 0x7FFF
                a1 = (v >> 15) & 0x7FFF
                a2 = v >> 30
                n0 = 0
                n1 = 0
                n2 = 1
            m0 = m & 0x7FFF
            m1 = (m >> 15) & 0x7FFF
            m2 = m >> 30
            col = a0 * m0 + n0
            col = a0 * m1 + a1 * m0 + n1 + (col >> 15)
            col = a0 * m2 + a1 * m1 + a2 * m0 + n2 + (col >> 15)
            v = (col >> 1) + ((a1 * m2 + a2 * m1) << 14) + ((a2 * m2) << 29)
            if neg:
                v = 0 - v
            if rr > 0:
                mask = ((1 << (rr - 1)) - 1) * 2 + 1
                rem = v & mask
                thr = mask >> 1
                if v < 0:
                    thr += 1
                v = v >> rr
                if rem > thr:
                    v += 1
            # ---- end mbqm; the stage's output ----
            if k < 3 or k == 9 or jj == 2:
                if k < 3:
                    oi = fb + 2
                elif k == 9:
                    oi = ab + 2
                else:
                    oi = ab + 7
                li = oi + 1
                if k == 9:
                    li = ab + 5
                elif k > 2:
                    li = ab + 10
                v += (((int(q[2 * oi + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * oi])
                lo = (((int(q[2 * li + 1]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * li])
                hi = (((int(q[2 * li + 3]) ^ 0x8000) - 0x8000) << 16) | int(q[2 * li + 2])
                if v < lo:
                    v = lo
                if v > hi:
                    v = hi
                if k == 0:
                    z = (int(w[olz + (v & 0xFF)]) ^ 0x80) - 0x80
                elif k == 1:
                    mc = (int(w[omn + c]) ^ 0x80) - 0x80
                    if v < mc:
                        mc = v
                    qv = (int(w[olp + (mc & 0xFF)]) ^ 0x80) - 0x80
                    if not rfc:
                        r = v
                        if rt:
                            r = (int(w[olr + (r & 0xFF)]) ^ 0x80) - 0x80
                        k += 1            # no RELU FC: stage 2 is skipped
                elif k == 2:
                    r = v
                    if rt:
                        r = (int(w[olr + (r & 0xFF)]) ^ 0x80) - 0x80
                elif k == 9:
                    mm = v
                elif k < 6:
                    g = v
                elif k < 9:
                    dd = v
                else:
                    h[c] = v
            elif jj == 0:
                e1 = v
            else:
                e2 = v
            k += 1
        c += 1
