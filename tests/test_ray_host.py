"""The Ray host actor's class on its own (no Ray): one child's runs, one after the other.

``ChildHost`` never imports Ray itself; what it asks Ray (its node's fork
server, its node's id) is stood in for here, so that its bookkeeping of
runs is tested without a cluster: calls for a run may come before the run
starts, and calls for a run long over must not wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from gymnasiarch._backends import ray_host
from gymnasiarch._backends.ray_host import ChildHost
from gymnasiarch._process.child import Launch
from test_forkserver import _Shared


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChildHost]:
    """A ChildHost whose node's fork server is a shared server of our own."""
    servers = _Shared(tmp_path / "private" / "node")
    requester = servers.requester()
    monkeypatch.setattr(ray_host, "node_fork_server", lambda: requester)
    monkeypatch.setattr(ray_host, "_node", lambda: ("node-1", "127.0.0.1"))
    try:
        yield ChildHost()
    finally:
        servers.end()


def _launch(target: str, *args: Any) -> Launch:
    return Launch("sim", target, args, {}, {}, None, 0)


async def test_a_host_runs_a_childs_runs_one_after_the_other(host: ChildHost) -> None:
    """Each run is its own; a call may come before its run, and one for an old run returns."""
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            early: dict[str, Any] = {}

            async def ask_before_the_run() -> None:
                early["spawned"] = await host.spawned(0)
                early["started"] = await host.started(0)

            group.start_soon(ask_before_the_run)
            await anyio.wait_all_tasks_blocked()
            first = await host.run(0, _launch("targets.basic:add", 1, 2), None, False)
        second = await host.run(1, _launch("targets.basic:exit_with", 3), None, False)
        # Run 0 is long over: its calls answer at once, as for a child that ended.
        assert await host.ready(0) == (False, None)
        assert (await host.spawned(0))[0] is None
        await host.kill(0)
        await host.terminate(0)
    assert first["result"] == 3
    assert second["exitcode"] == 3
    assert early["spawned"] == (first["pid"], os.getpid(), "node-1", "127.0.0.1", {})
    assert early["started"] is True
    assert second["pid"] != first["pid"]
