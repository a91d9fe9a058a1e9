"""Imports run one way.

Inside convert/: every module imports only from the layers below it (LAYERS, lowest first;
modules of one layer do not import each other), never a private (_name) name of another
module, and the import graph has no cycle. Across the top-level folders: only downward
(FOLDERS, lowest first: training/ never imports convert/), host_tools/ only the light modules
the host install runs (HOST_LIGHT), and the codegen half of convert/ (what writes C,
MicroPython and packages from a .tflite and its metadata) imports neither torch nor
TensorFlow. Read from the source with ast (function-level imports and
importlib.import_module("...") included), so a lazy import cannot hide an upward edge; the
heavy-import checks also run the modules in a fresh interpreter."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ROOT / "convert"

# lowest first; see `python -m mgrade_edge.convert.codegen --help` and docs/design.md
LAYERS = [
    ["errors", "tflite_reader", "names", "rings",   # ConvertError; the .tflite; tensor names; rings
     "mcu_harness"],                          # the emulated-core build/run/size harness
    ["spec"],                                 # StepSpec from the network
    ["metadata", "graph"],                    # the metadata schema; the TF step graph
    ["calibrate", "quantize", "rounding", "input_norm", "raw_input"],   # calibration feeds;
    #   int8 conversion; GPTQ; float frame -> int8 input (normalisation before quantisation);
    #   raw 8-bit codes
    ["stream", "widen"],                      # the Python streamer; int16 state variant
    ["forms"],                                # the widening ladder: the forms, cheapest first
    ["tflm_params"],                          # TFLM arithmetic, int8/int16: params, per element
    ["arena"],                                # static memory plan
    ["cemit"],                                # C text helpers
    ["codegen_fast"],                         # fast-path tables, layouts
    ["steps"],                                # the step program's records
    ["graph_package", "mgrade_match"],        # generic package writer; fusion matcher pieces
    ["state16"],                              # int16 minGRU state tail: params, match, C
    ["input16"],                              # int16 minGRU input front: params, match, C
    ["ops16"],                                # generic int16 ops of the widened forms: params, C
    ["program"],                              # the step program, matched once from the .tflite
    ["fast_steps"],                           # the fast path of the fused steps: declarations, absorbed ops
    ["codegen_mgrade", "vectors"],            # mGRADE package writer; TFLM test vectors
    ["resources"],                            # the resource table (flash, RAM, instructions)
    ["codegen", "codegen_micropython"],       # dispatcher; MicroPython package
    ["cpackage", "arduino", "host_eval"],     # the C folder; Arduino library; host int8 eval
    ["ladder"],                               # --form auto: the form chosen by measurement
    ["__main__"],                             # python -m mgrade_edge.convert
]


def _in_package(module: str) -> str:
    """A module path as seen from the repo: 'mgrade_edge.convert.x' -> 'convert.x' (the
    installed, namespaced name and the folder name are the same module)."""
    return module.removeprefix("mgrade_edge.")


def convert_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported convert module, names taken from it, line) for every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = _in_package(node.module)
            if module == "convert":
                out += [(a.name, [], node.lineno) for a in node.names]
            elif module.startswith("convert."):
                out.append((module.split(".")[1], [a.name for a in node.names],
                            node.lineno))
        elif isinstance(node, ast.Import):
            out += [(_in_package(a.name).split(".")[1], [], node.lineno) for a in node.names
                    if _in_package(a.name).startswith("convert.")]
    return out


def layer_violations(root: Path, layers: list[list[str]]) -> list[str]:
    """Every import of a convert module that is not strictly downward, every private name
    taken from another module, every module missing from the layers, and any cycle."""
    level = {m: k for k, names in enumerate(layers) for m in names}
    bad, edges = [], {}
    for path in sorted(root.glob("*.py")):
        mod = path.stem
        if mod == "__init__":
            continue
        if mod not in level:
            bad.append(f"convert/{path.name} is in no layer of LAYERS")
            continue
        for dep, names, line in convert_imports(path):
            edges.setdefault(mod, set()).add(dep)
            if dep not in level:
                bad.append(f"{path.name}:{line} imports convert.{dep}, which is in no layer")
            elif level[dep] >= level[mod]:
                bad.append(f"{path.name}:{line} imports convert.{dep} (layer {level[dep]}) from "
                           f"layer {level[mod]}: upward or sideways")
            private = [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{path.name}:{line} takes private {private} from convert.{dep}")
    # a cycle would need an upward edge, but check it directly as well
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in edges.get(m, ()):
            if state.get(d) == 1:
                bad.append("import cycle: " + " -> ".join(stack + [m, d]))
            elif d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in list(edges):
        if m not in state:
            visit(m, [])
    return bad


def test_convert_imports_follow_the_layers():
    bad = layer_violations(CONVERT, LAYERS)
    assert not bad, "\n".join(bad)


def test_the_check_sees_the_namespaced_imports():
    """The real modules import each other as mgrade_edge.convert.*: the checker must see them
    (an import spelling it missed would make every layer check pass vacuously)."""
    deps = {dep for dep, _, _ in convert_imports(CONVERT / "__main__.py")}
    assert {"spec", "stream", "quantize"} <= deps, deps


def test_every_layer_module_exists():
    missing = [m for names in LAYERS for m in names if not (CONVERT / f"{m}.py").is_file()]
    assert not missing, missing


def test_the_check_catches_a_cycle_an_upward_import_and_a_private_name(tmp_path):
    """The checker itself on a small tree shaped like the old convert/ (codegen and
    codegen_mgrade importing each other, one taking private helpers)."""
    (tmp_path / "low.py").write_text("x = 1\n")
    (tmp_path / "codegen.py").write_text(
        "from convert.low import x\n\ndef f():\n    from mgrade_edge.convert import codegen_mgrade\n")
    (tmp_path / "codegen_mgrade.py").write_text("from convert.codegen import _carray, f\n")
    bad = layer_violations(tmp_path, [["low"], ["codegen"], ["codegen_mgrade"]])
    assert any("codegen.py:4 imports convert.codegen_mgrade" in b for b in bad), bad
    assert any("private ['_carray']" in b for b in bad), bad
    assert any("import cycle" in b for b in bad), bad


@pytest.mark.parametrize("module", ["codegen", "codegen_mgrade", "codegen_micropython"])
def test_package_writers_import_no_private_names(module):
    for dep, names, line in convert_imports(CONVERT / f"{module}.py"):
        assert not [n for n in names if n.startswith("_")], (module, dep, line)


# --------------------------------------------------------------------------- across folders
# lowest first: a folder imports only from its own and the folders before it
FOLDERS = ["training", "convert", "host_tools", "benchmarks"]

# What host_tools/ may take from training/ and convert/: modules the host install (the `host`
# extra: numpy, pyserial, tflite-micro; no torch, no TensorFlow) can import, each checked
# below in a fresh interpreter.
HOST_LIGHT = {
    "training.interrupt",           # Ctrl-C: one line, exit 130
    "training.console",             # `require`: one line when a package is missing
    "convert.metadata",             # the model's metadata (class names), flatbuffers only
    "convert.stream",               # the TFLite-Micro reference (stream_eval's default)
    "convert.codegen_micropython",  # compile_mpy for the MicroPython launcher
    "convert.mcu_harness",          # the emulated boards' QEMU table (emulator.BOARDS), MCU dir
    "convert.cpackage",             # the C folder, run by firmware_stack with its stack probe
}

# The writers of the codegen half: C package, MicroPython package, C folder, Arduino library,
# the resource table and the host-compiled evaluation (from a .tflite and its metadata).
CODEGEN_WRITERS = ["codegen", "codegen_micropython", "cpackage", "arduino", "resources",
                   "host_eval"]
HEAVY = ("torch", "tensorflow")


def project_imports(path: Path) -> list[tuple[str, int]]:
    """(imported module as 'folder.module...', line) for every import of a project folder in a
    file: mgrade_edge.* (spelt with or without the prefix), benchmarks.*, and string
    arguments of importlib.import_module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            module = _in_package(node.module)
            if "." in module:
                out.append((module, node.lineno))
            else:                           # from convert import names: convert.names
                out += [(f"{module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(_in_package(a.name), node.lineno) for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((_in_package(node.args[0].value), node.lineno))
    return [(m, line) for m, line in out if m.split(".")[0] in FOLDERS]


def folder_violations(root: Path) -> list[str]:
    """Every import of a later folder (upward), and every host_tools import from training/ or
    convert/ outside HOST_LIGHT."""
    level = {f: k for k, f in enumerate(FOLDERS)}
    bad = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for mod, line in project_imports(path):
                top = mod.split(".")[0]
                if level[top] > level[folder]:
                    bad.append(f"{rel}:{line} imports {mod}: {top}/ comes after {folder}/")
                if folder == "host_tools" and top in ("training", "convert") \
                        and mod.count(".") == 1 and mod not in HOST_LIGHT:
                    bad.append(f"{rel}:{line} imports {mod}, which the host install "
                               f"need not run (HOST_LIGHT)")
                if folder == "host_tools" and mod in ("training", "convert"):
                    bad.append(f"{rel}:{line} imports the whole {mod} package")
    return bad


def test_folders_import_downward_only():
    bad = folder_violations(ROOT)
    assert not bad, "\n".join(bad)


def test_the_folder_check_catches_upward_and_heavy_host_imports(tmp_path):
    """The checker on a small tree: training/ importing convert/ (as memory.py once imported
    convert.rings), host_tools/ taking convert.spec, a lazy importlib string."""
    for folder in FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "training" / "memory.py").write_text(
        "from mgrade_edge.convert import rings\n")
    (tmp_path / "host_tools" / "tool.py").write_text(
        "import importlib\n\ndef f():\n    from mgrade_edge.convert.spec import extract\n"
        "    importlib.import_module('mgrade_edge.training.train')\n")
    (tmp_path / "convert" / "ok.py").write_text("from mgrade_edge.training import ring_layout\n")
    (tmp_path / "convert" / "resources.py").write_text(      # as the resource table once did
        "def measure():\n    from benchmarks import mcu_cost as mc\n")
    bad = folder_violations(tmp_path)
    assert any(b.startswith("training/memory.py:1 imports convert") for b in bad), bad
    assert any("tool.py:4 imports convert.spec" in b for b in bad), bad
    assert any("tool.py:5 imports training.train" in b for b in bad), bad
    assert any("resources.py:2 imports benchmarks.mcu_cost" in b for b in bad), bad
    assert not any("ok.py" in b for b in bad), bad


def _modules_loaded(code: str) -> dict:
    """Run `code` in a fresh interpreter; the HEAVY packages it left in sys.modules."""
    probe = code + (f"\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} "
                    f"if m in sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def codegen_half() -> list[str]:
    """CODEGEN_WRITERS and every convert module they import (the ast graph, lazy imports
    included), sorted."""
    todo, seen = list(CODEGEN_WRITERS), set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [dep for dep, _, _ in convert_imports(CONVERT / f"{m}.py")]
    return sorted(seen)


def test_the_codegen_half_is_the_back_of_convert():
    """The closure holds the writers and what they need, not the network side (spec, the TF
    graph, quantize, widen): a new import of those would pull torch or TensorFlow."""
    half = codegen_half()
    assert {"codegen_mgrade", "state16", "tflm_params", "tflite_reader", "metadata"} <= set(half)
    assert not {"spec", "graph", "quantize", "widen", "calibrate", "__main__"} & set(half), half


def test_the_codegen_half_imports_neither_torch_nor_tensorflow():
    half = codegen_half()
    code = "\n".join(f"import mgrade_edge.convert.{m}" for m in half)
    assert _modules_loaded(code) == [], half


def test_host_light_modules_import_neither_torch_nor_tensorflow():
    code = "\n".join(f"import mgrade_edge.{m}" for m in sorted(HOST_LIGHT))
    assert _modules_loaded(code) == []


def test_generating_c_and_micropython_loads_neither_torch_nor_tensorflow(tiny_int8, tmp_path):
    """Not only the imports: writing the C package and the MicroPython package of a real
    model (the tiny random mGRADE model) loads neither, lazily or otherwise."""
    model = tiny_int8 / "model.tflite"
    code = (f"from mgrade_edge.convert import codegen, codegen_micropython\n"
            f"codegen.generate({str(model)!r}, {str(tmp_path / 'c')!r})\n"
            f"codegen_micropython.generate({str(model)!r}, {str(tmp_path / 'mpy')!r})\n")
    assert _modules_loaded(code) == []
    assert (tmp_path / "c" / "mg_model.c").is_file()
    assert (tmp_path / "mpy" / "mg_model.py").is_file()


# functions of one job each (issue 27): no function in convert/ over this many lines
MAX_FUNCTION_LINES = 80


def test_no_function_over_80_lines_in_convert():
    """Every function of every convert/ module (methods and nested ones included) spans at
    most MAX_FUNCTION_LINES lines, docstring included."""
    long = []
    for path in sorted(CONVERT.glob("*.py")):
        tree = ast.parse(path.read_text())
        long += [f"{path.stem}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
                 for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


# --------------------------------------------------------------------------- package data
def package_data_files() -> set[Path]:
    """The files under mcu/ that pyproject.toml's package-data globs put into the wheel (as
    mgrade_edge.mcu), resolved against the checkout."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mcu = ROOT / cfg["package-dir"]["mgrade_edge.mcu"]
    return {p.resolve() for g in cfg["package-data"]["mgrade_edge.mcu"] for p in mcu.glob(g)
            if p.is_file()}


def harness_files() -> set[Path]:
    """Every file under mcu/ that mcu_harness.build_check reads for each emulated target: the
    runtime and harness sources it compiles, the link scripts (-T, and what they INCLUDE from
    the -L folder), the board.mk its CPU flags come from, and the headers the qemu-cm4 build
    (the resource table's) includes (arm-none-eabi-gcc -MM, both kernel paths)."""
    from mgrade_edge.convert import mcu_harness as h

    gen = ROOT / "no-such-generated-package"
    files = set()
    for target, t in h.TARGETS.items():
        if "platform" not in t:
            continue
        files |= {Path(p) for g in h.harness_sources(target, gen).values() for p in g
                  if gen not in Path(p).parents}
        ld = t["ldflags"]
        scripts = [Path(ld[k + 1]) for k, f in enumerate(ld) if f == "-T"]
        libdirs = [Path(ld[k + 1]) for k, f in enumerate(ld) if f == "-L"]
        files |= set(scripts)
        for s in scripts:
            for inc in re.findall(r"^\s*INCLUDE\s+(\S+)", s.read_text(), re.M):
                files |= {d / inc for d in libdirs if (d / inc).is_file()}
    files |= {h.BOARDS_DIR / b / "board.mk" for b in h.CORES}
    t = h.TARGETS["qemu-cm4"]
    if shutil.which(t["cc"]):
        for fast in (0, 1):
            for src in [*h.harness_sources("qemu-cm4", gen)["runtime"],
                        *h.harness_sources("qemu-cm4", gen)["harness"]]:
                if gen in src.parents:
                    continue
                r = subprocess.run([t["cc"], *h.WARN, *t["flags"], f"-DMG_FAST={fast}", "-I",
                                    str(h.RUNTIME), "-I", str(h.HARNESS), "-I", str(gen), "-MM",
                                    "-MG", str(src)], capture_output=True, text=True)
                assert r.returncode == 0, r.stderr
                deps = r.stdout.replace("\\\n", " ").split(":", 1)[1].split()
                found = [(src.parent / d).resolve() for d in deps]   # -MG: the generated
                files |= {d for d in found if d.is_file()             # package's are absent
                          and d.is_relative_to(h.MCU.resolve())}
    return {f.resolve() for f in files}


def test_the_harness_c_sources_are_package_data():
    """The resource table builds model_check.c & co. from the installed mgrade_edge.mcu: every
    file the harness reads must exist and be declared package data (a glob dropped from
    pyproject.toml, or a new platform file outside the globs, fails here, not in a user's
    wheel)."""
    from mgrade_edge.convert import mcu_harness as h

    assert h.MCU.resolve() == (ROOT / "mcu").resolve()
    files = harness_files()
    assert {h.HARNESS.resolve() / "model_check.c", h.HARNESS.resolve() / "mg_test_platform.h",
            h.RUNTIME.resolve() / "mg_model.h"} <= files, sorted(files)
    missing = sorted(str(f) for f in files if not f.is_file())
    assert not missing, missing
    undeclared = sorted(str(f.relative_to(ROOT)) for f in files - package_data_files())
    assert not undeclared, undeclared
