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
from gymnasiarch._process.output import MAX_JSON_LINE, MAX_LINE, OutputCapture
from gymnasiarch._spec import json_key_paths
from gymnasiarch._wire.logclient import RELAYED_LINE_BYTES, _encode_record, carried_whole

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


# A line that ends with a two-byte character right at MAX_LINE, and one that
# never ends (a progress bar), cut while it is read.
UTF8_PROGRAM = textwrap.dedent(
    f"""
    import sys
    sys.stdout.buffer.write(b"a" * ({MAX_LINE} - 1) + "é".encode() + b"z\\n")
    sys.stdout.buffer.write(b"b" * ({MAX_LINE} - 2) + "€".encode() * 3)
    sys.stdout.flush()
    """
)


async def test_a_cut_never_splits_a_character(caplog: pytest.LogCaptureFixture) -> None:
    """The cut moves back to a character's start (before: 'a\ufffd' and '\ufffdz')."""
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    spec = ChildSpec(
        "utf8", command=[sys.executable, "-c", UTF8_PROGRAM], restart="transient", significant=True
    )
    with anyio.fail_after(60):
        async with Supervisor([spec]) as sup:
            await sup.wait()
    messages = [r.getMessage() for r in caplog.records if r.name == "gymnasiarch.child.utf8"]
    assert messages == [
        "a" * (MAX_LINE - 1),
        "éz",
        "b" * (MAX_LINE - 2),
        "€€€",
    ]


# Lines under RELAYED_LINE_BYTES whose records the relay's JSON encoding grows
# past what it carries whole: escaped quotes (3x: the line is the message, its
# fields the extras) and bytes that are not UTF-8 (6x); and one that fits.
RELAY_PROGRAM = textwrap.dedent(
    f"""
    import json, sys
    out = sys.stdout.buffer
    out.write(json.dumps({{"data": '"' * ({RELAYED_LINE_BYTES} // 2 - 100)}}).encode() + b"\\n")
    out.write(b'{{"data": "' + b"\\xff" * 100_000 + b'"}}\\n')
    out.write(json.dumps({{"level": "error", "message": "x" * 200_000, "n": 1}}).encode() + b"\\n")
    out.flush()
    """
)


async def test_a_relayed_json_line_whose_record_would_be_cut_goes_in_plain_pieces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Ray host's capture: every record it makes travels whole on the JSON wire.

    Before, a line under the relay's bound was one record whatever its
    encoded size, and the relay cut that record's message and dropped its
    fields: 241,816 bytes of escaped quotes were enough.
    """
    caplog.set_level(logging.DEBUG, "gymnasiarch.child")
    capture = OutputCapture(
        "relayed",
        json_keys=json_key_paths(None),  # output="json"
        max_json_line=RELAYED_LINE_BYTES,
        json_record_fits=carried_whole,  # as ray_host._start_child makes it
    )
    stdout, stderr = capture.child_ends()
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for stream in capture.streams:
                    group.start_soon(capture.pump, stream)
                await anyio.run_process(
                    [sys.executable, "-c", RELAY_PROGRAM], stdout=stdout.fd, stderr=stderr.fd
                )
                capture.close_child_ends()
    finally:
        capture.close()
    records = [r for r in caplog.records if r.name == "gymnasiarch.child.relayed"]
    for record in records:  # what the relay sends: no message cut, no fields dropped
        assert b"bytes cut]" not in _encode_record(record)
    *pieces, kept = records
    assert (kept.levelno, kept.n, kept.getMessage()) == (logging.ERROR, 1, "x" * 200_000)  # type: ignore[attr-defined]
    assert max(len(r.getMessage()) for r in pieces) <= MAX_LINE  # at most a byte a character
    assert not any(hasattr(r, "data") for r in pieces)
    quotes = json.dumps({"data": '"' * (RELAYED_LINE_BYTES // 2 - 100)})
    invalid = '{"data": "' + "\ufffd" * 100_000 + '"}'
    assert "".join(r.getMessage() for r in pieces) == quotes + invalid
