"""The CPython internals our fork server relies on exist on the running Python.

``gymnasiarch._process.cpython`` lists them (RELIED_ON); a new CPython
version that renamed or dropped one fails here, naming it, before any child
fails to start in a way that would be hard to read.
"""

from __future__ import annotations

import functools
import inspect
from multiprocessing import popen_forkserver, spawn

import pytest

from gymnasiarch._process import cpython


def _label(owner: object, dotted: str) -> str:
    return f"{getattr(owner, '__name__', type(owner).__name__)}.{dotted}"


@pytest.mark.parametrize(
    ("owner", "dotted"),
    cpython.RELIED_ON,
    ids=[_label(owner, dotted) for owner, dotted in cpython.RELIED_ON],
)
def test_each_internal_exists(owner: object, dotted: str) -> None:
    """Each (owner, dotted attribute) of the list resolves on this Python."""
    functools.reduce(getattr, dotted.split("."), owner)


def test_the_list_covers_every_alias() -> None:
    """Every alias the module binds is one of the listed internals (none unlisted)."""
    listed = {functools.reduce(getattr, d.split("."), o) for o, d in cpython.RELIED_ON}
    aliases = {
        name: value
        for name, value in vars(cpython).items()
        if not name.startswith("_")
        and name not in {"annotations", "Any", "RELIED_ON"}
        and not inspect.ismodule(value)
        and getattr(value, "__module__", None) != cpython.__name__
    }
    assert {name for name, value in aliases.items() if value not in listed} == set()


def test_the_child_bootstrap_takes_the_pipe_and_the_parent_sentinel() -> None:
    """``spawn._main(fd, parent_sentinel)``: the server calls it with both, by position."""
    assert list(inspect.signature(spawn._main).parameters)[:2] == ["fd", "parent_sentinel"]  # type: ignore[attr-defined]


def test_the_fork_server_popen_launches_through_launch() -> None:
    """The launcher subclasses it and overrides ``_launch``; ``__init__`` must call it."""
    source = inspect.getsource(cpython.fork_popen_init)
    assert "self._launch(" in source
    assert "_fds" in inspect.getsource(popen_forkserver.Popen)
