"""A converted model as an Arduino library (and its .zip for the IDE's "Add .ZIP Library").

    python -m mgrade_edge.convert.arduino MODEL_DIR --out DIR [--name NAME] [--prefix mg] [--no-zip]
    python -m mgrade_edge.convert.arduino --model-src PKG_DIR --out DIR ...

MODEL_DIR is a converted model folder (model.tflite with the mgrade metadata, as
`python -m mgrade_edge.convert` writes it) or a .tflite file. --model-src takes a C model package
folder as it is instead (every .c/.h there, with <prefix>_model_data.h; like the firmware's
MODEL_SRC, e.g. tests/fixtures/toy_model). DIR/<NAME>/ gets an Arduino library
(library format 1.5) and DIR/<NAME>.zip the same folder zipped:

    <NAME>/library.properties
    <NAME>/src/<NAME>.h                    the header a sketch includes (model, app, board API)
    <NAME>/src/mg_model*.{c,h}             the generated model package (convert.codegen)
    <NAME>/src/mg_*.{c,h}                  the C runtime (mcu/runtime) and the protocol app (mcu/app)
    <NAME>/src/mg_board.h, mg_board_arduino.cpp   the board port: Serial + a tick counter
    <NAME>/examples/mg_protocol/           the serial protocol, for host_tools/stream_eval.py
    <NAME>/examples/mg_classify/           sensor frame -> mg_model_quantize_frame -> mg_model_step -> class

NAME defaults to mgrade_<model name>. The same sources build on every Arduino core: on AVR the
model's constants stay in flash (MG_ROM = __flash, mcu/runtime/mg_rom.h), on Arm cores with the
DSP extension (Cortex-M4/M7/M33) the package takes its fast path (MG_FAST), elsewhere the
portable kernels. `library_files()` is the one list of what goes into src/.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MCU = ROOT / "mcu"
ARDUINO_BOARD = MCU / "boards" / "arduino"
APP_SOURCES = ["mg_app.c", "mg_app.h", "mg_proto.c", "mg_proto.h", "mg_cobs.c", "mg_cobs.h",
               "mg_crc.c", "mg_crc.h"]
EXAMPLES = ["mg_protocol", "mg_classify"]
HEADER_TOKEN = "MGRADE_LIBRARY_HEADER"
AVR_FLASH_DATA_LIMIT = 0x10000     # __flash pointers reach the first 64 KB of flash


class ArduinoLibraryError(RuntimeError):
    """A user mistake (a missing model, a bad name): one line for the CLI."""


def library_files(package_dir: Path) -> dict[str, Path]:
    """src/ file name -> the file it is copied from: the runtime, the protocol app, the board
    port and the model package in package_dir (every .c/.h there; later the per-run C folder).
    The runtime's tests/ and the other boards stay out."""
    files: dict[str, Path] = {}
    for src in sorted((MCU / "runtime").glob("mg_*.[ch]")):
        files[src.name] = src
    for name in APP_SOURCES:
        files[name] = MCU / "app" / name
    files["mg_board.h"] = MCU / "boards" / "mg_board.h"
    files["mg_board_arduino.cpp"] = ARDUINO_BOARD / "mg_board_arduino.cpp"
    for src in sorted(Path(package_dir).glob("*.[ch]")):
        if src.name in files:
            raise ArduinoLibraryError(f"{src} would replace the runtime's {src.name}")
        files[src.name] = src
    return files


def _header(name: str, prefix: str) -> str:
    guard = re.sub(r"\W", "_", name).upper() + "_H"
    return f"""/* {name}.h - the mgrade-edge model as an Arduino library (written by convert/arduino.py).
 *
 * Model API (mg_model.h): {prefix}_model_t, {prefix}_model_init, {prefix}_model_step,
 * {prefix}_model_info, {prefix}_model_quantize_frame and the {prefix.upper()}_MODEL_* constants
 * ({prefix}_model_data.h). Serial protocol app (mg_app.h) over the board port (mg_board.h):
 * board_init(), mg_app_init(), mg_app_poll(). See examples/. */
#ifndef {guard}
#define {guard}

#include "mg_model.h"
#include "{prefix}_model_data.h"
#include "mg_app.h"
#include "mg_board.h"

#endif /* {guard} */
"""


def _properties(name: str, model_name: str, model_id: str) -> str:
    return "\n".join([
        f"name={name}",
        "version=1.0.0",
        "author=mgrade-edge",
        "maintainer=mgrade-edge",
        f"sentence=The mGRADE model '{model_name}' ({model_id}) as int8 C: one frame in, "
        "the step's logits out.",
        "paragraph=Generated from model.tflite by python -m mgrade_edge.convert.arduino: the model package, "
        "the integer runtime (bit-exact with TFLite-Micro), the serial protocol app and examples.",
        "category=Data Processing",
        "url=https://github.com/",
        "architectures=*",
        f"includes={name}.h",
        ""])


def _package_define(package_dir: Path, prefix: str, key: str) -> str | None:
    m = re.search(rf"#define {prefix.upper()}_MODEL_{key} (\S+)",
                  (package_dir / f"{prefix}_model_data.h").read_text())
    return m.group(1).strip('"') if m else None


def check_package_dir(package_dir: Path, prefix: str = "mg") -> None:
    """ArduinoLibraryError unless package_dir holds a C model package: .c sources and
    <prefix>_model_data.h (what the library's header includes)."""
    d = Path(package_dir)
    if not (d / f"{prefix}_model_data.h").is_file() or not any(d.glob("*.c")):
        raise ArduinoLibraryError(f"{d} is not a C model package (needs .c files and "
                                  f"{prefix}_model_data.h, as convert.codegen writes them)")


def write_library(model: Path | None, out: Path, name: str | None = None, prefix: str = "mg",
                  package_dir: Path | None = None, make_zip: bool = True) -> dict:
    """Write the library for `model` (a converted folder or a .tflite) under out/<name>/ (and
    out/<name>.zip). package_dir: a C model package folder to take as it is instead of running
    the code generator (then `model` may be None). Returns {'dir', 'zip', 'name', 'header',
    'files', 'const_bytes'}."""
    from mgrade_edge.convert.codegen import generate

    if package_dir is not None:
        check_package_dir(package_dir, prefix)
    model = Path(model if model is not None else package_dir)
    tflite = model / "model.tflite" if model.is_dir() else model
    if package_dir is None and not tflite.is_file():
        raise ArduinoLibraryError(f"no model.tflite in {model}: convert a run first "
                                  f"(python -m mgrade_edge.convert RUN --out RUN/int8)")
    out = Path(out)
    staging = out / ".package"
    if package_dir is None:
        if staging.exists():
            shutil.rmtree(staging)
        info = generate(tflite.read_bytes(), staging, prefix)
        if info.get("kind") != "mgrade":
            raise ArduinoLibraryError(f"{tflite} has no mgrade streaming metadata (the library "
                                      f"wraps the stateful model package)")
        package_dir = staging
    package_dir = Path(package_dir)
    model_name = _package_define(package_dir, prefix, "NAME") or "model"
    model_id = _package_define(package_dir, prefix, "ID") or ""
    const_bytes = int(_package_define(package_dir, prefix, "CONST_BYTES") or 0)
    if name is None:
        name = "mgrade_" + re.sub(r"\W+", "_", model_name).strip("_").lower()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name):
        raise ArduinoLibraryError(f"library name {name!r}: use letters, digits and _ "
                                  f"(starting with a letter)")
    lib = out / name
    if lib.exists():
        shutil.rmtree(lib)
    src = lib / "src"
    src.mkdir(parents=True)
    files = library_files(package_dir)
    for dest, origin in files.items():
        shutil.copyfile(origin, src / dest)
    (src / f"{name}.h").write_text(_header(name, prefix))
    (lib / "library.properties").write_text(_properties(name, model_name, model_id))
    for ex in EXAMPLES:
        (lib / "examples" / ex).mkdir(parents=True)
        text = (ARDUINO_BOARD / "examples" / ex / f"{ex}.ino").read_text()
        (lib / "examples" / ex / f"{ex}.ino").write_text(text.replace(HEADER_TOKEN, f"{name}.h"))
    if staging.exists():
        shutil.rmtree(staging)
    zpath = None
    if make_zip:
        zpath = out / f"{name}.zip"
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(lib.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(out).as_posix())
    return {"dir": lib, "zip": zpath, "name": name, "header": f"{name}.h",
            "files": sorted(files) + [f"{name}.h"], "const_bytes": const_bytes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mgrade_edge.convert.arduino",
                                 description=__doc__.split("\n\n", 1)[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None,
                    help="converted model folder (model.tflite) or a .tflite file")
    ap.add_argument("--model-src", default=None, metavar="PKG_DIR",
                    help="take this C model package folder as it is (no code generation)")
    ap.add_argument("--out", required=True, help="folder that gets <NAME>/ and <NAME>.zip")
    ap.add_argument("--name", default=None, help="library name (default mgrade_<model name>)")
    ap.add_argument("--prefix", default="mg", help="C prefix of the model package (default mg)")
    ap.add_argument("--no-zip", action="store_true", help="skip the .zip")
    a = ap.parse_args(argv)
    if (a.model is None) == (a.model_src is None):
        ap.error("give a converted MODEL_DIR or --model-src PKG_DIR (one of them)")
    try:
        r = write_library(a.model, Path(a.out), a.name, a.prefix, make_zip=not a.no_zip,
                          package_dir=a.model_src)
    except ArduinoLibraryError as e:
        print(f"convert.arduino: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:   # noqa: BLE001 - codegen/IO errors are one line for the user
        from mgrade_edge.convert.tflite_reader import TFLiteReadError
        from mgrade_edge.convert.tflm_params import CodegenError
        if isinstance(e, (TFLiteReadError, CodegenError, OSError)):
            print(f"convert.arduino: error: {e}", file=sys.stderr)
            return 2
        raise
    note = ""
    if r["const_bytes"] > AVR_FLASH_DATA_LIMIT - 4096:
        note = (f"; note: {r['const_bytes']} B of constants exceed what AVR's 16-bit __flash "
                f"pointers reach (64 KB): the library builds for ESP32/Arm cores only")
    print(f"Arduino library {r['name']}: {r['dir']} ({len(r['files'])} files in src/, "
          f"constants {r['const_bytes']} B){' and ' + str(r['zip']) if r['zip'] else ''}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
