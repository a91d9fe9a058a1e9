"""int8 kernels of the MicroPython model package, TFLite-Micro reference arithmetic.

Counterpart of mcu/runtime/mg_kernels.c: the same operations in the same order. The loops
whose values stay within 32 bits (dot products, gathers, copies, table look-ups) are
`@micropython.viper`; every requantization (a 32 x 32 -> 64-bit product) runs on Python ints
(`@micropython.native` loops with mg_quant's arithmetic inlined), which are exact on every
port whatever its word size (they grow into long ints where a machine word would overflow).

Buffers: int8 tensors are array('b') objects or memoryviews of them (viper reads their raw
bytes; Python code reads signed values), weights are bytes, int32 data are array('i') or
tuples. Viper functions take at most 4 arguments (the limit on some ports); the extra scalars
come in a small array('h') `p` (values -32768..32767, read back sign-extended).
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


@micropython.native
def requant_acc(out, acc, n, nch, bias, mult, shift, q):
    """out[i] = clamp(mbqm(acc[i] + bias[c], mult[c], shift[c]) + out_off), c = i % nch
    (mult/shift of length 1: per-tensor). q = (out_off, act_min, act_max). mbqm is inlined
    (mg_quant.mbqm; multipliers are >= 0, so SRDHM never saturates)."""
    ooff, lo, hi = q
    per = len(mult) > 1
    m = mult[0]
    s = shift[0]
    for i in range(n):
        c = i % nch
        v = acc[i]
        if bias is not None:
            v += bias[c]
        if per:
            m = mult[c]
            s = shift[c]
        if s > 0:
            v = (v << s) & 0xFFFFFFFF
            if v & 0x80000000:
                v -= 0x100000000
            r = 0
        else:
            r = -s
        v *= m
        v = (v + 0x40000000) >> 31 if v >= 0 else -((0x3FFFFFFF - v) >> 31)
        if r:
            mask = (1 << r) - 1
            rem = v & mask
            v >>= r
            if rem > (mask >> 1) + (1 if v < 0 else 0):
                v += 1
        v += ooff
        out[i] = lo if v < lo else (hi if v > hi else v)


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
def ring_indices(idx: ptr32, delays: ptr16, p: ptr16, w: int):
    """Gather indices into concat(frame_t, ring) for one step (convert/graph.gather_indices):
    tap e of channel c with delay d reads c (d == 0) or (1 + (w - d) mod R) * H + c, where
    w = t mod R is this step's write slot. p = (H, N, R); delays tap-major [N*H]."""
    H = int(p[0])
    N = int(p[1])
    R = int(p[2])
    e = 0
    while e < N:
        c = 0
        while c < H:
            d = int(delays[e * H + c])
            if d == 0:
                idx[e * H + c] = c
            else:
                s = w - d
                if s < 0:
                    s += R
                idx[e * H + c] = (1 + s) * H + c
            c += 1
        e += 1


@micropython.viper
def fill8(dst: ptr8, v: int, n: int):
    """dst[0..n) = v (an int8 value)."""
    i = 0
    while i < n:
        dst[i] = v
        i += 1
