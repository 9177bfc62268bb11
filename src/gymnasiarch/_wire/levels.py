"""Which records the parent would handle, as levels a child gives its own loggers.

The parent re-injects a child's record ``(name, level)`` with
``logger.isEnabledFor(level)`` and ``logger.handle(record)``: it reaches a
handler if and only if ``logging.disable`` lets it through, the logger is
not disabled, the level is at least the logger's effective level, and at
least one handler on the way up (to the first ``propagate=False``) has a
level at or below it, or -- when that way has no handler at all -- the
level is at least ``logging.lastResort``'s. Each of these is a threshold,
so the whole question is one number per logger name, its *threshold*.

A logger without a level, handlers, ``propagate=False`` or ``disabled``
of its own has its nearest such ancestor's threshold, which is what a
level set on that ancestor gives it in the child's tree too. So the parent
sends (:func:`parent_levels`) the threshold of each logger that has any of
these, and the child sets exactly those levels (:func:`apply_levels`):
``isEnabledFor`` in the child then answers as the parent would, for every
name, one the parent never heard of included, before a ``LogRecord`` is even
made. A record the parent would drop is not sent; one it would hand to a
handler is.

What this does not follow, erring on the side of sending: filters (of
loggers and handlers: a record a filter would drop is still sent), and a
threshold of 0 (``NOTSET``) on a logger below the root, which a child's
level cannot express (0 means "inherit"): the child then sends everything
at or above the lowest threshold of all. A child's own ``setLevel`` calls
stand until the parent's next push overwrites the names it covers.

The snapshot is plain data, sent with a child's log ticket and pushed on
its log connection::

    {"disable": <logging.disable's level>,
     "levels": {<logger name, "" for the root>: <threshold>, ...},
     "off": [<names of disabled loggers>],
     "warnings": <whether logging.captureWarnings(True) is on>}

The last one makes a child's ``warnings.warn`` a record of ``py.warnings``
where the parent's are (older snapshots without it mean "off").
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Any

#: A threshold no record reaches: a logger whose records are never handled.
OFF = sys.maxsize
_OWN = "gymnasiarch"
_OWN_PREFIX = _OWN + "."


def _threshold(logger: logging.Logger) -> int:
    """The lowest level of a record of *logger* that the parent hands to a handler.

    ``logging.disable`` and ``logger.disabled`` aside: they travel apart.
    """
    lowest: int | None = None  # the lowest level of a handler on the way up
    walked: logging.Logger | None = logger
    while walked is not None:
        for handler in walked.handlers:
            if lowest is None or handler.level < lowest:
                lowest = handler.level
        walked = walked.parent if walked.propagate else None
    if lowest is None:  # no handler at all: Logger.callHandlers falls back to lastResort
        last = logging.lastResort
        lowest = OFF if last is None else last.level
    return min(OFF, max(logger.getEffectiveLevel(), lowest))


def _has_own_settings(logger: logging.Logger) -> bool:
    return bool(logger.level or logger.handlers or not logger.propagate or logger.disabled)


class Configured:
    """The thresholds of this process's loggers that have settings of their own.

    Taken once (:meth:`now`), it gives each child its snapshot
    (:meth:`for_child`): a push to many children looks at the loggers once.
    """

    def __init__(
        self, disable: int, levels: dict[str, int], off: set[str], warnings: bool = False
    ) -> None:
        self.disable = disable
        self.levels = levels
        self.off = off
        self.warnings = warnings

    @classmethod
    def now(cls) -> Configured:
        """The configuration as it is now."""
        root = logging.getLogger()
        # A copy: another thread may add a logger while we look.
        known = list(root.manager.loggerDict.items())
        levels = {"": _threshold(root)}
        off = {""} if root.disabled else set()
        for name, logger in known:
            if isinstance(logger, logging.Logger) and _has_own_settings(logger):
                levels[name] = _threshold(logger)
                if logger.disabled:
                    off.add(name)
        return cls(root.manager.disable, levels, off, _capturing_warnings())

    def for_child(self, child: str) -> dict[str, Any]:
        """The snapshot child *child* applies (plain data, see the module's docstring).

        The parent files a child's records of ``gymnasiarch.*`` loggers under
        ``gymnasiarch.child.<child>`` (see :mod:`gymnasiarch._wire.records`), so the
        child's ``gymnasiarch`` loggers get that logger's threshold.
        """
        own = f"{_OWN_PREFIX}child.{child}"
        mine = own + "."

        def filed_as_named(name: str) -> bool:
            ours = name == _OWN or name.startswith(_OWN_PREFIX)
            return not ours or name == own or name.startswith(mine)

        levels = {name: level for name, level in self.levels.items() if filed_as_named(name)}
        off = [name for name in self.off if filed_as_named(name)]
        if own not in levels:  # no settings of its own: its nearest ancestor's
            levels[own] = _inherited(own, self.levels)
        levels[_OWN] = OFF if own in off else levels[own]
        if any(level <= 0 for name, level in levels.items() if name):
            # 0 means "inherit" below the root: everything at or above the
            # lowest threshold, from the root, rather than a record too few.
            levels = {"": min(levels.values())}
        return {"disable": self.disable, "levels": levels, "off": off, "warnings": self.warnings}


def _capturing_warnings() -> bool:
    """Whether ``logging.captureWarnings(True)`` is on in this process."""
    return getattr(warnings.showwarning, "__module__", None) == logging.__name__


def parent_levels(child: str) -> dict[str, Any]:
    """This process's logging configuration as the levels child *child* applies."""
    return Configured.now().for_child(child)


# -- the child's side ---------------------------------------------------------------

_lock = threading.Lock()
_applied: dict[str, int] = {}  # the names whose levels the last snapshot set
_disabled: set[str] = set()  # the loggers it disabled
_warnings_ours = threading.Event()  # warnings are captured because a snapshot said so


def check_levels(snapshot: object) -> tuple[int, dict[str, int], set[str], bool]:
    """The parts of a levels snapshot, once each is of its type.

    Raises:
        ValueError: The snapshot is malformed; the message says where.
    """
    if not isinstance(snapshot, Mapping):
        # One kind of error for every way a snapshot can be malformed.
        raise ValueError(f"levels snapshot: expected an object, got {type(snapshot).__name__}")  # noqa: TRY004
    disable, levels, off = snapshot.get("disable"), snapshot.get("levels"), snapshot.get("off")
    if type(disable) is not int:
        raise ValueError(f"levels snapshot: 'disable' is not an int: {disable!r}")
    if not isinstance(levels, Mapping) or not all(
        type(name) is str and type(level) is int for name, level in levels.items()
    ):
        raise ValueError("levels snapshot: 'levels' is not an object of names to ints")
    if not isinstance(off, list) or not all(type(name) is str for name in off):
        raise ValueError("levels snapshot: 'off' is not a list of names")
    captured = snapshot.get("warnings", False)
    if type(captured) is not bool:
        raise ValueError(f"levels snapshot: 'warnings' is not a bool: {captured!r}")
    return disable, dict(levels), set(off), captured


def _logger(name: str) -> logging.Logger:
    return logging.getLogger(name or None)


def _inherited(name: str, levels: Mapping[str, int]) -> int:
    """The level *name* gets under *levels*: its own, or its nearest ancestor's."""
    while name:
        if name in levels:
            return levels[name]
        name = name.rpartition(".")[0]
    return levels.get("", logging.WARNING)


def apply_levels(snapshot: object) -> None:
    """Give this process's loggers the levels of a snapshot from :func:`parent_levels`.

    Names an earlier snapshot set and this one does not go back to
    ``NOTSET`` (and enabled). It goes in two passes, so that a record logged
    in another thread meanwhile is dropped only if the old levels or the
    new ones would drop it, never by a mix: first every level touched goes
    down to the lower of the old and the new, then to the new.

    Raises:
        ValueError: The snapshot is malformed (nothing was changed).
    """
    disable, levels, off, captured = check_levels(snapshot)
    # Turned on as the parent's is; turned off only if a snapshot turned it
    # on: a child that captures warnings itself keeps doing so.
    if captured and not _capturing_warnings():
        logging.captureWarnings(True)
        _warnings_ours.set()
    elif not captured and _warnings_ours.is_set():
        logging.captureWarnings(False)
        _warnings_ours.clear()
    levels.setdefault("", _logger("").level)
    with _lock:
        touched = [(name, _logger(name)) for name in levels.keys() | _applied.keys()]
        manager = logging.getLogger().manager
        for name in _disabled - off:
            _logger(name).disabled = False
        # Levels set as attributes, then one logging.disable() call clears
        # every logger's cache: setLevel() would clear them all per logger.
        for name, logger in touched:
            lower = min(logger.getEffectiveLevel(), _inherited(name, levels))
            logger.level = max(lower, 1) if name else lower  # 0 below the root inherits
        logging.disable(min(disable, manager.disable))
        for name, logger in touched:
            logger.level = levels.get(name, logging.NOTSET)
        for name in off:
            _logger(name).disabled = True
        logging.disable(disable)
        _applied.clear()
        _applied.update((name, level) for name, level in levels.items() if name)
        _disabled.clear()
        _disabled.update(off)
