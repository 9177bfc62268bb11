"""gymnasiarch: supervise the processes of a simulation from asyncio or trio.

The public API is what this module and the modules named in the docs export;
everything in a module whose name starts with an underscore is private.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("gymnasiarch")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
