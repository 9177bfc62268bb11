"""Issue 17 on the Ray backend, on a real (local) cluster: a hung child and a runaway one.

The watchdog's timer and the max_memory sampler live in the process layer,
which the child's actor runs on the child's node: a hang is found there,
with its stack dump, and an over-limit child is stopped there; the driver
gets the same errors as on one machine.
"""

from __future__ import annotations

import os
import sys

import anyio
import pytest

# Before Ray is imported: a cluster bound to loopback only, and no usage report.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ray = pytest.importorskip(
    "ray", reason="Ray cannot be installed here (pip install 'gymnasiarch[ray]')"
)

import ray_fixtures  # noqa: E402
from gymnasiarch import ChildSpec, RayBackend, Supervisor  # noqa: E402
from gymnasiarch.exceptions import (  # noqa: E402
    ChildHungError,
    ChildOverLimitError,
    PrematureTaskDeathError,
)
from test_ray import (  # noqa: E402, F401 - its leak checks are autouse here too
    no_fd_left_open,
    no_process_left_behind,
)

ray_cluster = ray_fixtures.ray_cluster

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


async def _cause_of_giving_up(spec: ChildSpec) -> BaseException | None:
    sup = Supervisor([spec], backend=RayBackend(), handle_signals=False, max_restarts=0)
    with anyio.fail_after(90), pytest.raises(PrematureTaskDeathError) as caught:
        async with sup:
            await sup.wait()
    return caught.value.__cause__


async def test_a_hung_child_on_ray_is_found_with_its_stack(ray_cluster: None) -> None:
    """An async child blocked by a sync call: hung after its watchdog, the dump names the call."""
    spec = ChildSpec("agent", "targets.watchdog:blocks_its_loop", restart="transient", watchdog=0.5)
    cause = await _cause_of_giving_up(spec)
    assert isinstance(cause, ChildHungError), repr(cause)
    assert cause.watchdog == 0.5
    assert cause.stack is not None
    assert "sleep_in_the_loop" in cause.stack


async def test_a_runaway_child_on_ray_is_stopped_over_max_memory(ray_cluster: None) -> None:
    """A child holding more than its max_memory resident is stopped on its node, and told so."""
    spec = ChildSpec(
        "learner",
        "targets.limits:hold_resident",
        args=(200 * 2**20,),
        restart="transient",
        max_memory="100MiB",
        shutdown=1,
    )
    cause = await _cause_of_giving_up(spec)
    assert isinstance(cause, ChildOverLimitError), repr(cause)
    assert "max_memory of 100 MiB" in str(cause)
