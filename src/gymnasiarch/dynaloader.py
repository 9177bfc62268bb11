"""Import modules and objects by name: the supervisor's way to find a child's target.

The four names and their signatures are those of ``palaestrai.util.dynaloader``
(which took them from :mod:`pydoc`). Two flaws of the original are fixed:

- :func:`safeimport` returns ``None`` for a module that does not exist, as it
  always documented (the original raised, because it tested ``exc is
  ImportError`` and the error is a :class:`ModuleNotFoundError`).
- :func:`load_with_params` accepts ``package.module:Attr`` and
  ``package.module.Attr`` and reports every failure as one error that names
  the path, instead of ``ValueError: not enough values to unpack``.

Every failure to *find or import* something is an :class:`ErrorDuringImport`;
a failure to *construct* it is an
:class:`~gymnasiarch.exceptions.InitializationFailedError`.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import pickle
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from types import ModuleType, TracebackType
from typing import Any

from gymnasiarch.exceptions import GymnasiarchError, InitializationFailedError

__all__ = ["ErrorDuringImport", "load_with_params", "locate", "safeimport"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _rebuild_error_during_import(
    filename: str,
    exc: type[BaseException],
    value: BaseException,
    text: str,
    child: str | None = None,
) -> ErrorDuringImport:
    error = ErrorDuringImport(filename, (exc, value, None))
    error.traceback_text = text
    error.child = child
    return error


class ErrorDuringImport(GymnasiarchError):  # noqa: N818 - the seed's name
    """Errors that occurred while trying to import something.

    Raised by :func:`safeimport` when a module was found but raised while it
    was executed (a syntax error, an exception at import time, a missing
    dependency of it), and by :func:`locate` and :func:`load_with_params`
    when the thing asked for cannot be found at all.

    Attributes:
        filename: The file that failed, or the dotted path asked for when
            there is no file.
        exc: The type of the original exception.
        value: The original exception (also this exception's ``__cause__``).
        tb: The original traceback (``None`` after unpickling).
        traceback_text: The original traceback, formatted; it survives
            pickling, so a parent can show where a child's import failed.
        child: The path in the tree of the child whose target it is
            (``"agents/agent-1"``), where a supervisor's check of the targets
            raised it, else ``None``. The message then begins with it:
            ``child 'agents/agent-1': problem in ...``.
    """

    def __init__(self, filename: str, exc_info: ExcInfo) -> None:
        super().__init__(filename, exc_info)
        self.filename = filename
        self.exc, self.value, self.tb = exc_info
        self.traceback_text = "".join(traceback.format_exception(self.exc, self.value, self.tb))
        self.__cause__ = self.value
        self.child: str | None = None

    def __str__(self) -> str:
        where = f"child {self.child!r}: " if self.child is not None else ""
        return f"{where}problem in {self.filename} - {self.exc.__name__}: {self.value}"

    def __reduce__(self) -> tuple[Any, ...]:
        # A traceback never pickles, and the original exception may not
        # either: send its type and value when they survive the trip, a
        # plain stand-in with the same text when they do not.
        exc: type[BaseException] = self.exc
        value: BaseException = self.value
        if not _picklable((exc, value)):
            exc, value = RuntimeError, RuntimeError(f"{self.exc.__name__}: {self.value}")
        return (
            _rebuild_error_during_import,
            (self.filename, exc, value, self.traceback_text, self.child),
        )


def _picklable(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def _module_file(path: str) -> str:
    """The file a module would be loaded from, or *path* if that is unknown."""
    try:
        spec = importlib.util.find_spec(path)
    except (ImportError, ValueError):
        return path
    if spec is None or not spec.origin or not spec.has_location:
        return path
    return spec.origin


def _is_not_found(error: ModuleNotFoundError, path: str) -> bool:
    """True if *error* says that *path* itself (or a package above it) is missing.

    A module that exists but imports something missing raises the same
    exception type; only the name tells the two apart.
    """
    missing = error.name
    if missing is None:
        return False
    return path == missing or path.startswith(missing + ".")


def _forget(path: str, cache: MutableMapping[str, ModuleType]) -> None:
    """Drop *path* and its submodules from ``sys.modules``, keeping them in *cache*."""
    if path in sys.builtin_module_names:
        return  # a built-in module cannot be reloaded from disk
    doomed = [name for name in sys.modules if name == path or name.startswith(path + ".")]
    for name in doomed:
        cache[name] = sys.modules.pop(name)


def safeimport(
    path: str,
    forceload: int = 0,
    cache: MutableMapping[str, ModuleType] | None = None,
) -> ModuleType | None:
    """Import a module; handle errors; return None if the module isn't found.

    If the module is found but an exception occurs, it's wrapped in an
    :class:`ErrorDuringImport` exception and reraised. Unlike
    :func:`__import__`, if a package path is specified, the module at the end
    of the path is returned, not the package at the beginning. If the
    optional *forceload* argument is 1, the module and its submodules are
    reloaded from disk (unless it is a built-in module).

    Args:
        path: Dotted module path, e.g. ``"package.module"``.
        forceload: Truthy to drop the module from :data:`sys.modules` and
            import it again from its file.
        cache: Receives the modules that *forceload* dropped, keyed by name,
            so that a caller can keep them alive or put them back.

    Returns:
        The module, or ``None`` if no module of that name exists.

    Raises:
        ErrorDuringImport: The module exists but importing it raised.
    """
    if not isinstance(path, str) or not path:
        raise TypeError(f"safeimport() needs a non-empty module path, got {path!r}")
    if forceload and path in sys.modules:
        _forget(path, {} if cache is None else cache)
        # A file written since the last import may be unknown to the
        # finders' directory caches.
        importlib.invalidate_caches()
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as error:
        if _is_not_found(error, path):
            return None
        raise ErrorDuringImport(_module_file(path), _exc_info(error)) from error
    except SyntaxError as error:
        raise ErrorDuringImport(error.filename or path, _exc_info(error)) from error
    except Exception as error:
        raise ErrorDuringImport(_module_file(path), _exc_info(error)) from error


def _exc_info(error: BaseException) -> ExcInfo:
    return (type(error), error, error.__traceback__)


def _split(path: str) -> tuple[str, list[str]]:
    """Split ``pkg.mod:attr.sub`` into the module part and the attribute parts.

    Without a colon the whole path is dotted, and where the module ends is
    found by importing (see :func:`locate`).
    """
    module, colon, attrs = path.partition(":")
    if colon:
        return module, attrs.split(".") if attrs else []
    return "", path.split(".")


def locate(path: str, forceload: int = 0) -> Any:
    """Locate an object by name or dotted path, importing as necessary.

    ``locate("json.decoder.JSONDecoder")`` imports :mod:`json.decoder` and
    returns its ``JSONDecoder``; a name without a module (``"len"``) is
    looked up in :mod:`builtins`. ``package.module:attr`` names the module
    part explicitly.

    Returns:
        The object, or ``None`` if there is no such module or attribute.

    Raises:
        ErrorDuringImport: A module on the path exists but importing it raised.
    """
    if not isinstance(path, str) or not path:
        raise TypeError(f"locate() needs a non-empty dotted path, got {path!r}")
    module_part, attrs = _split(path)
    if module_part:
        module = safeimport(module_part, forceload)
        if module is None:
            return None
        found = _getattr_path(module, attrs)
    else:
        start = _import_longest_prefix(attrs, forceload)  # strips the module part
        found = _getattr_path(start, attrs)
    return None if found is _MISSING else found


def _import_longest_prefix(parts: list[str], forceload: int) -> Any:
    """Import the longest prefix of *parts* that is a module; strip it off *parts*.

    With no importable prefix, the name is looked up in :mod:`builtins`.
    """
    obj: Any = builtins
    taken = 0
    for end in range(1, len(parts) + 1):
        candidate = safeimport(".".join(parts[:end]), forceload)
        if candidate is None:
            break
        obj, taken = candidate, end
    del parts[:taken]
    return obj


_MISSING: Any = object()


def _getattr_path(obj: Any, attrs: list[str]) -> Any:
    """Follow *attrs* from *obj*; ``_MISSING`` if one of them is not there."""
    for attr in attrs:
        obj = getattr(obj, attr, _MISSING)
        if obj is _MISSING:
            break
    return obj


def _not_found(path: str, error: ImportError | AttributeError) -> ErrorDuringImport:
    return ErrorDuringImport(path, (type(error), error, None))


def resolve(path: str) -> Any:
    """Return the object *path* names, or raise one error that says why not.

    The strict sibling of :func:`locate`, used for children's targets:
    ``pkg.mod:attr`` or ``pkg.mod.attr``.

    Raises:
        ErrorDuringImport: The module does not exist, raised while it was
            imported, or has no such attribute; the message names *path*.
    """
    if not isinstance(path, str) or not path.strip():
        raise TypeError(f"expected a dotted path like 'package.module:name', got {path!r}")
    module_part, attrs = _split(path)
    if not module_part:
        module_part, attrs = ".".join(attrs[:-1]), attrs[-1:]
    if not module_part or not all(attrs):
        raise _not_found(path, ImportError(f"{path!r} is not of the form 'package.module:name'"))
    module = safeimport(module_part)
    if module is None:
        raise _not_found(path, ModuleNotFoundError(f"no module named {module_part!r}"))
    obj = _getattr_path(module, attrs)
    if obj is _MISSING:
        missing = ".".join(attrs)
        raise _not_found(
            path, AttributeError(f"module {module_part!r} has no attribute {missing!r}")
        )
    return obj


def load_with_params(module_path: str, params: Mapping[str, Any] | None) -> Any:
    """Load a class from module_path and pass params.

    Args:
        module_path: ``package.module:Class`` or ``package.module.Class``;
            any callable will do, not only a class.
        params: Keyword arguments for the call; ``None`` means none.

    Returns:
        ``Class(**params)``.

    Raises:
        ErrorDuringImport: *module_path* cannot be found or imported.
        InitializationFailedError: The object is not callable, does not take
            these parameters, or raised; the original error is the cause.
        TypeError: *params* is not a mapping.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params for {module_path!r} must be a mapping of keyword arguments, "
            f"got {type(params).__name__}"
        )
    target = resolve(module_path)
    if not callable(target):
        raise InitializationFailedError(
            f"{module_path!r} is a {type(target).__name__}, not something to call"
        )
    try:
        return target(**params)
    except Exception as error:
        raise InitializationFailedError(
            f"{module_path}(**{dict(params)!r}) failed: {type(error).__name__}: {error}"
        ) from error
