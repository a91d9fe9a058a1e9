"""convert/ imports run one way: every module imports only from the layers below it (LAYERS,
lowest first; modules of one layer do not import each other), never a private (_name) name of
another module, and the import graph has no cycle. Read from the source with ast (function-
level imports included), so a lazy import cannot hide an upward edge."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONVERT = Path(__file__).resolve().parents[1] / "convert"

# lowest first; see `python -m mgrade_edge.convert.codegen --help` and docs/design.md
LAYERS = [
    ["errors", "tflite_reader", "names", "rings"],  # ConvertError; the .tflite; tensor names; rings
    ["spec", "raw_input"],                    # StepSpec from the network, ConvertError; raw codes
    ["metadata", "graph"],                    # the metadata schema; the TF step graph
    ["calibrate", "quantize", "rounding", "input_norm"],   # calibration feeds; int8
    #   conversion; GPTQ; float frame -> int8 input (normalisation before quantisation)
    ["stream", "widen"],                      # the Python streamer; int16 state variant
    ["forms"],                                # the widening ladder: the forms, cheapest first
    ["tflm_params"],                          # TFLM Prepare-time parameters
    ["arena"],                                # static memory plan
    ["cemit"],                                # C text helpers
    ["codegen_fast"],                         # fast-path arithmetic, tables, layouts
    ["graph_package", "mgrade_match"],        # generic package writer; fusion matcher
    ["state16"],                              # int16 minGRU state tail: params, match, C
    ["input16"],                              # int16 minGRU input front: params, match, C
    ["ops16"],                                # generic int16 ops of the widened forms: params, C
    ["codegen_mgrade"],                       # mGRADE package writer
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
