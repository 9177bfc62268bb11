"""Run each event loop once, in the fork server, so that no child pays for it first.

Imported by the fork server alone (it is the last name of
:data:`gymnasiarch._process.run.PRELOAD`). A process's first event loop sets up
what anyio and asyncio make lazily on first use (anyio's table of loaded
backends, asyncio's event-loop policy, first calls of their code): 0.3-0.4 ms
of an ``async def`` child's start, measured, in every child. Done here once,
every child forked from the server inherits it. Anywhere else importing this
module does nothing harmful: inside a running event loop it does nothing.
"""

from __future__ import annotations

import contextlib

import anyio


async def _nothing() -> None:
    """The coroutine each loop runs."""


def run_each_event_loop_once() -> None:
    """Run an empty coroutine on asyncio, and on trio where it is installed."""
    for backend in ("asyncio", "trio"):
        # LookupError: trio is not installed; RuntimeError: a loop runs here already.
        with contextlib.suppress(LookupError, RuntimeError):
            anyio.run(_nothing, backend=backend)


run_each_event_loop_once()
