"""output="json" and stderr_level under the Ray backend: the node's pump, the driver's records."""

from __future__ import annotations

import json
import logging

import anyio
import pytest

import ray_fixtures
from gymnasiarch import ChildSpec, RayBackend, Supervisor

# test_ray's leak checks, which allow for Ray's own processes and sockets; importing
# it skips this module where Ray cannot be installed.
from test_ray import no_fd_left_open, no_process_left_behind  # noqa: F401

ray_cluster = ray_fixtures.ray_cluster  # the Ray test modules' cluster (or the session's)


async def test_json_lines_and_stderr_level_on_the_cluster(
    ray_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    line = json.dumps({"level": "error", "message": "json on ray", "ts": 1e9 + 0.5, "node": 7})
    spec = ChildSpec(
        "j",
        "os:system",
        args=(f"echo '{line}'; echo plain-err >&2",),
        restart="transient",
        significant=True,
        output="json",
        stderr_level="INFO",
    )
    with anyio.fail_after(60):
        async with Supervisor([spec], backend=RayBackend()) as sup:
            await sup.wait()
    records = {r.getMessage(): r for r in caplog.records if r.name == "gymnasiarch.child.j"}
    found = records["json on ray"]  # parsed on the node, sent over the log wire
    assert (found.levelno, found.created) == (logging.ERROR, 1e9 + 0.5)
    assert found.node == 7  # type: ignore[attr-defined]
    plain = records["plain-err"]
    assert (plain.levelno, plain.stream) == (logging.INFO, "stderr")  # type: ignore[attr-defined]
