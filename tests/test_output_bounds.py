"""How long a captured line may be: every byte arrives, in bounded pieces.

A real program writes the lines through a real pipe; the supervisor's
capture turns them into records.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import anyio
import pytest

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._process.output import MAX_JSON_LINE, MAX_LINE

# Three JSON lines on stdout: one under the bound, one just over it, one far over.
PROGRAM = textwrap.dedent(
    f"""
    import json, sys
    for name, size in (("small", 300_000), ("over", {MAX_JSON_LINE} + 10), ("far", 3_000_000)):
        sys.stdout.write(json.dumps({{"level": "error", "message": name + "x" * size, "n": 1}}))
        sys.stdout.write("\\n")
    sys.stdout.flush()
    """
)


async def test_an_over_long_json_line_arrives_whole_in_plain_pieces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No piece is bigger than a plain line's; the pieces together are the line, byte for byte."""
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    spec = ChildSpec(
        "big",
        command=[sys.executable, "-c", PROGRAM],
        restart="transient",
        significant=True,
        output="json",
    )
    with anyio.fail_after(60):
        async with Supervisor([spec]) as sup:
            await sup.wait()
    records = [r for r in caplog.records if r.name == "gymnasiarch.child.big"]
    small, *pieces = records
    # Under the bound: one record, with its level and fields.
    assert (small.levelno, small.n) == (logging.ERROR, 1)  # type: ignore[attr-defined]
    assert small.getMessage() == "small" + "x" * 300_000
    # Over it: plain pieces of at most MAX_LINE (before, a first piece of MAX_JSON_LINE).
    assert max(len(r.getMessage()) for r in pieces) <= MAX_LINE
    assert all(r.levelno == logging.INFO and not hasattr(r, "n") for r in pieces)
    text = "".join(r.getMessage() for r in pieces)
    lines = [
        json.dumps({"level": "error", "message": name + "x" * size, "n": 1})
        for name, size in (("over", MAX_JSON_LINE + 10), ("far", 3_000_000))
    ]
    assert text == "".join(lines)  # every byte, in order
