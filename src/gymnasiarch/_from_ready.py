"""``FromReady``: an argument that is the value an earlier sibling announced when ready.

An environment that binds port 0 tells its supervisor the address it got,
``child_context().ready(address)``; its agents, started after it, are given
that address as an argument: ``ChildSpec("agent", ..., kwargs={"address":
FromReady("env")})``. The supervisor substitutes the value when it starts the
agent, and again at each restart, so an agent restarted after its
environment (``rest_for_one``) gets the environment's new address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FromReady:
    """Stands for the value child *source* passed to ``child_context().ready(value)``.

    Put it in a :class:`~gymnasiarch.ChildSpec`'s ``args`` or ``kwargs``
    (also inside lists, tuples and dicts there). *source* names a sibling
    that starts before this child (``"env"``), or a child of a nested
    sibling (``"world/env"``). The supervisor checks, when it is built, that
    the source exists, starts earlier, is waited for (it has a
    ``ready_timeout``) and that the tree starts its children in sequence.

    Args:
        source: The path of the child whose ready value to pass.
        key: If given, pass ``value[key]`` instead of the whole value (for a
            child that announces a dict, say ``{"host": ..., "port": ...}``).
    """

    source: str
    key: str | int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip("/"):
            raise TypeError(f"FromReady: expected a child's name or path, got {self.source!r}")


def references(value: Any) -> Iterator[FromReady]:
    """Every :class:`FromReady` in *value* (an argument), containers searched."""
    if isinstance(value, FromReady):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from references(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from references(item)


def substitute(value: Any, lookup: Callable[[FromReady], Any]) -> Any:
    """*value* with every :class:`FromReady` replaced by ``lookup(it)``.

    Only what holds a :class:`FromReady` is rebuilt (as a list, tuple, set
    or dict); everything else, a named tuple or an ``OrderedDict`` among
    them, is passed on as it is.
    """
    if isinstance(value, FromReady):
        found = lookup(value)
        return found if value.key is None else found[value.key]
    if not any(True for _ in references(value)):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        items = [substitute(item, lookup) for item in value]
        if isinstance(value, list):
            return items
        make = getattr(value, "_make", None)  # a named tuple takes its items one by one
        return make(items) if make is not None else type(value)(items)
    return {key: substitute(item, lookup) for key, item in value.items()}
