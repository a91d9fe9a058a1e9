"""Run the MicroPython package's modules in CPython with the semantics of a 32-bit port.

`@micropython.viper` functions get their arguments as views with viper's pointer semantics on
a 32-bit machine (ptr8/ptr16 load unsigned, ptr32 loads signed, stores truncate) and every
integer inside them is an `I32` that raises OverflowError as soon as a value leaves the int32
range, which on a 32-bit board would wrap silently. `@micropython.native` and plain functions
run unchanged (Python ints). `array` follows MicroPython (a bytes initializer is raw data).

    mods = load_package(pkg_dir)          # {'mg_model': module, 'mg_kernels': ..., ...}
"""
from __future__ import annotations

import array as _array
import functools
import sys
import types
from pathlib import Path

LO, HI = -(1 << 31), 1 << 31


class I32(int):
    """An int that must stay within int32."""

    def __new__(cls, v=0):
        v = int.__int__(v) if isinstance(v, int) else int(v)
        if not LO <= v < HI:
            raise OverflowError(f"viper value {v} leaves int32 (a 32-bit port would wrap)")
        return super().__new__(cls, v)


def _op(name):
    base = getattr(int, name)

    def f(a, b):
        r = base(int(a), int(b))
        return NotImplemented if r is NotImplemented else I32(r)
    return f


for _n in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__lshift__",
           "__rlshift__", "__rshift__", "__rrshift__", "__and__", "__rand__", "__or__",
           "__ror__", "__xor__", "__rxor__"):
    setattr(I32, _n, _op(_n))
I32.__neg__ = lambda a: I32(-int(a))


class Ptr:
    """A viper pointer of `bits` onto a buffer (32-bit port semantics)."""

    def __init__(self, buf, bits):
        mv = memoryview(buf)
        self.mv = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        self.bits = bits
        self.view = self.mv if bits == 8 else self.mv.cast({16: "H", 32: "i"}[bits])

    def __getitem__(self, i):
        return I32(self.view[int(i)])

    def __setitem__(self, i, v):
        v = int(v)
        if self.bits == 8:
            v &= 0xFF
        elif self.bits == 16:
            v &= 0xFFFF
        elif not LO <= v < HI:
            raise OverflowError(f"ptr32 store of {v}")
        self.view[int(i)] = v


class _PtrType(str):
    """A viper pointer type: its name as an annotation ("ptr8"), and the cast ptr8(buffer)
    inside a viper function (the fused kernels take some buffers in a tuple)."""

    def __call__(self, buf):
        return Ptr(buf, int(self[3:]))


def _viper(fn):
    ann = dict(fn.__annotations__)

    @functools.wraps(fn)
    def wrapper(*args):
        names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
        conv = []
        for name, a in zip(names, args):
            kind = ann.get(name)
            kind = "int" if kind is I32 or kind is int else kind
            if kind in ("ptr8", "ptr16", "ptr32"):
                conv.append(Ptr(a, int(kind[3:])))
            elif kind == "int":
                conv.append(I32(a))
            else:
                conv.append(a)
        r = fn(*conv)
        return int(r) if r is not None else None
    return wrapper


def _micropython_module():
    m = types.ModuleType("micropython")
    m.viper = _viper
    m.native = lambda f: f
    m.const = lambda v: v
    return m


def _array_module():
    m = types.ModuleType("array")

    def array(typecode, init=()):
        a = _array.array(typecode)
        if isinstance(init, (bytes, bytearray)):
            a.frombytes(bytes(init))
        else:
            a.extend(init)
        return a
    m.array = array
    return m


def load_package(pkg: Path, names=("mg_quant", "mg_kernels", "mg_model")) -> dict:
    """Execute the package's modules (in dependency order) under the simulation."""
    saved = {k: sys.modules.get(k) for k in ("micropython", "array", *names)}
    sys.modules["micropython"] = _micropython_module()
    sys.modules["array"] = _array_module()
    mods = {}
    try:
        for name in names:
            mod = types.ModuleType(name)
            mod.__file__ = str(Path(pkg) / f"{name}.py")
            src = (Path(pkg) / f"{name}.py").read_text()
            # viper code reads annotations ptr8/ptr16/ptr32 as names, casts with int() and ptr8()
            mod.__dict__.update(ptr8=_PtrType("ptr8"), ptr16=_PtrType("ptr16"),
                                ptr32=_PtrType("ptr32"))
            mod.__dict__["int"] = I32 if name == "mg_kernels" else int
            code = compile(src, mod.__file__, "exec", dont_inherit=True)
            sys.modules[name] = mod
            exec(code, mod.__dict__)
            mods[name] = mod
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mods
