"""The same supervisor under trio: library code uses anyio only."""

from __future__ import annotations

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch.exceptions import PrematureTaskDeathError


async def _tree() -> dict[str, object]:
    with anyio.fail_after(20):
        return await Supervisor(
            [
                ChildSpec("a", "targets.basic:add", args=(1, 2), restart="transient"),
                ChildSpec("b", "targets.basic:async_add", args=(3, 4), restart="transient"),
            ]
        ).run()


async def _crashing_tree() -> None:
    with anyio.fail_after(20):
        await Supervisor(
            [ChildSpec("x", "targets.basic:crash", restart="transient")], max_restarts=1
        ).run()


def test_small_tree_runs_under_trio() -> None:
    """Results come back under trio just as under asyncio."""
    assert anyio.run(_tree, backend="trio") == {"a": 3, "b": 7}


def test_give_up_under_trio_is_the_same_typed_error() -> None:
    """A crash loop under trio ends in PrematureTaskDeathError."""
    with pytest.raises(PrematureTaskDeathError) as info:
        anyio.run(_crashing_tree, backend="trio")
    assert info.value.child == "x"
