"""localbvi: run a base GGUF model and its instruct sibling offline, and see the difference."""

__all__ = ["__version__"]

__version__ = "0.1.0"
