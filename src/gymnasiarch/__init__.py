"""gymnasiarch: supervise the processes of a simulation from asyncio or trio.

The public API is what this module and the modules named in the docs export;
everything in a module whose name starts with an underscore is private.

The supervisor's names are imported on first use, so that importing a leaf
module (``gymnasiarch.exceptions``, ``.dynaloader``, ``.seeding``) costs only
the standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gymnasiarch._backends.base import Backend as Backend
    from gymnasiarch._backends.base import ExitStatus as ExitStatus
    from gymnasiarch._backends.base import RemoteTraceback as RemoteTraceback
    from gymnasiarch._backends.local import LocalBackend as LocalBackend
    from gymnasiarch._context import ChildContext as ChildContext
    from gymnasiarch._context import child_context as child_context
    from gymnasiarch._from_ready import FromReady as FromReady
    from gymnasiarch._runtime_config import RuntimeConfig as RuntimeConfig
    from gymnasiarch._spec import Backoff as Backoff
    from gymnasiarch._spec import ChildSpec as ChildSpec
    from gymnasiarch._supervisor.events import Event as Event
    from gymnasiarch._supervisor.options import SupervisorOptions as SupervisorOptions
    from gymnasiarch._supervisor.supervisor import ChildInfo as ChildInfo
    from gymnasiarch._supervisor.supervisor import Supervisor as Supervisor
    from gymnasiarch.ray_backend import RayBackend as RayBackend


def _version() -> str:
    # importlib.metadata costs ~70 ms and ~3 MB: every child and the fork
    # server import this package, and next to none of them asks.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("gymnasiarch")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0+unknown"


_LAZY = {
    "Backend": "gymnasiarch._backends.base",
    "Backoff": "gymnasiarch._spec",
    "ChildContext": "gymnasiarch._context",
    "ChildInfo": "gymnasiarch._supervisor.supervisor",
    "ChildSpec": "gymnasiarch._spec",
    "Event": "gymnasiarch._supervisor.events",
    "FromReady": "gymnasiarch._from_ready",
    "LocalBackend": "gymnasiarch._backends.local",
    "RayBackend": "gymnasiarch.ray_backend",
    "ExitStatus": "gymnasiarch._backends.base",
    "RemoteTraceback": "gymnasiarch._backends.base",
    "RuntimeConfig": "gymnasiarch._runtime_config",
    "Supervisor": "gymnasiarch._supervisor.supervisor",
    "SupervisorOptions": "gymnasiarch._supervisor.options",
    "child_context": "gymnasiarch._context",
}

__all__ = [
    "Backend",
    "Backoff",
    "ChildContext",
    "ChildInfo",
    "ChildSpec",
    "Event",
    "ExitStatus",
    "FromReady",
    "LocalBackend",
    "RayBackend",
    "RemoteTraceback",
    "RuntimeConfig",
    "Supervisor",
    "SupervisorOptions",
    "__version__",
    "child_context",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gymnasiarch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
