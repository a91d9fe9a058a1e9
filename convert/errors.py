"""The converter's user-facing error, in a module that imports nothing heavy (the host tools
catch it without torch or TensorFlow installed)."""


class ConvertError(ValueError):
    """A model or input the converter cannot handle (clear message, exit code != 0)."""
