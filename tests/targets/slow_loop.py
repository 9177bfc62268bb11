"""A target whose event loop takes a second to start (test_watchdog: not the target's hang).

Importing this module (which the child does before its watchdog could
start) makes asyncio's next event loop slow to make, as a heavy event-loop
import (trio's under spawn) is.
"""

from __future__ import annotations

import asyncio
import time

import anyio

LOOP_START = 1.0


class _SlowPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        time.sleep(LOOP_START)
        return super().new_event_loop()


asyncio.set_event_loop_policy(_SlowPolicy())


async def returns_after_a_slow_loop_start() -> str:
    """Beats (by itself) for a moment once its loop runs, then returns."""
    await anyio.sleep(0.1)
    return "ok"
