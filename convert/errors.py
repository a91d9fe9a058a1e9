"""The converter's user-facing messages: its error and the one-line report of a written
package, in a module that imports nothing heavy (the host tools catch the error without torch
or TensorFlow installed)."""


class ConvertError(ValueError):
    """A model or input the converter cannot handle (clear message, exit code != 0)."""


def package_line(model_id: str, parts: list[str], dest: str, label: str = "") -> str:
    """The line a package writer's CLI prints: 'model ID (label): part, part, ... -> dest'
    (no ' (label)' where label is empty); dest: the written folder or files."""
    head = f"model {model_id} ({label})" if label else f"model {model_id}"
    return f"{head}: {', '.join(parts)} -> {dest}"
