"""How long a captured line may be under the Ray backend.

On a Ray node the captured output travels to the supervisor as records of a
bounded size (:data:`gymnasiarch._wire.logclient.RELAYED_LINE_BYTES`): a JSON
line longer than that is cut into plain pieces on the node, so that nothing
of it is lost on the way, and a shorter one keeps its fields.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import anyio
import pytest

import ray_fixtures
from gymnasiarch import ChildSpec, RayBackend, Supervisor
from gymnasiarch._process.output import MAX_LINE
from gymnasiarch._wire.logclient import RELAYED_LINE_BYTES

# test_ray's leak checks, which allow for Ray's own processes and sockets; importing
# it skips this module where Ray cannot be installed.
from test_ray import no_fd_left_open, no_process_left_behind  # noqa: F401

ray_cluster = ray_fixtures.ray_cluster  # the Ray test modules' cluster (or the session's)

SIZES = (("kept", RELAYED_LINE_BYTES - 1000), ("mid", 700_000), ("far", 1_500_000))


def _line(name: str, size: int) -> str:
    return json.dumps({"level": "error", "message": name + "x" * size, "n": 1})


PROGRAM = textwrap.dedent(
    f"""
    import json, sys
    for name, size in {SIZES!r}:
        sys.stdout.write(json.dumps({{"level": "error", "message": name + "x" * size, "n": 1}}))
        sys.stdout.write("\\n")
    sys.stdout.flush()
    """
)


async def test_long_json_lines_arrive_whole_from_a_ray_node(
    ray_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    spec = ChildSpec(
        "big",
        command=[sys.executable, "-c", PROGRAM],
        restart="transient",
        significant=True,
        output="json",
    )
    with anyio.fail_after(90):
        async with Supervisor([spec], backend=RayBackend()) as sup:
            await sup.wait()
    records = [
        r
        for r in caplog.records
        if r.name == "gymnasiarch.child.big" and r.stream == "stdout"  # type: ignore[attr-defined]
    ]
    kept, *pieces = records
    # Under the relay's bound: one record, with its level and fields.
    assert (kept.levelno, kept.n) == (logging.ERROR, 1)  # type: ignore[attr-defined]
    assert kept.getMessage() == "kept" + "x" * (RELAYED_LINE_BYTES - 1000)
    # Over it: plain pieces, none cut on the way (before: "mid" arrived as one
    # record with its message cut and its fields gone; of "far", ~0.5 MiB was lost).
    assert max(len(r.getMessage()) for r in pieces) <= MAX_LINE
    assert not any(hasattr(r, "n") for r in pieces)
    assert "".join(r.getMessage() for r in pieces) == _line(*SIZES[1]) + _line(*SIZES[2])
