"""The live status view of ``gymnasiarch run`` and ``demo`` on a terminal.

A block of lines, one per child, stays pinned under the log stream: before a
log line is written the block is erased, after it the block is drawn again,
and a lifecycle event redraws it. Nothing polls: the view changes only when
something happens.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

_UP_AND_CLEAR = "\x1b[{}F\x1b[J"  # cursor up N lines to column 1, clear to the end
_STATE_COLOURS = {
    "waiting": "\x1b[2m",
    "running": "\x1b[32m",
    "starting": "\x1b[33m",
    "restarting": "\x1b[33m",
    "stopping": "\x1b[33m",
    "exited": "\x1b[2m",
    "terminated": "\x1b[2m",
}
_RESET = "\x1b[0m"


def _usage(row: dict[str, Any]) -> str:
    """A running child's resident memory and CPU time, as read at this redraw ("" if unknown)."""
    memory, cpu = row.get("memory"), row.get("cpu_seconds")
    if not isinstance(memory, int) or not isinstance(cpu, int | float):
        return ""
    from gymnasiarch._spec import format_size  # noqa: PLC0415 - a leaf, loaded by now

    return f"{format_size(memory):>10} {cpu:7.1f}s cpu  "


class LiveStatus:
    """A text stream for the log handler, with the status block kept under it."""

    def __init__(self, terminal: TextIO, title: str) -> None:
        self._terminal = terminal
        self._title = title
        self._lines: list[str] = []
        self._drawn = 0
        self._lock = threading.Lock()  # log records may come from any thread

    # -- the stream the log handler writes to -------------------------------------

    def write(self, text: str) -> int:
        """Write log output above the block."""
        with self._lock:
            self._erase()
            written = self._terminal.write(text)
            self._draw()
            self._terminal.flush()
        return written

    def flush(self) -> None:
        """Flush the terminal."""
        self._terminal.flush()

    def isatty(self) -> bool:
        """It is a terminal (so the log renderer may use colours)."""
        return True

    # -- the block -------------------------------------------------------------------

    def update(self, rows: Sequence[dict[str, Any]]) -> None:
        """Show *rows* (name, state, pid, memory, cpu, restarts, crashes, last exit).

        Memory and CPU time are as read for these rows: the block is made
        anew at each lifecycle event, not on a timer (nothing polls), so the
        title says when they were read (``memory/cpu as of 05:12:09``).
        """
        width = max((len(str(row["name"])) for row in rows), default=0)
        # A line wider than the terminal would wrap, and the erase would miss it.
        columns = shutil.get_terminal_size().columns - 1
        title = self._title
        if any(_usage(row) for row in rows):  # a quiet tree's figures may be minutes old
            title += f"  (memory/cpu as of {time.strftime('%H:%M:%S')})"
        lines = [f"\x1b[1m{title[:columns]}\x1b[0m"]
        for row in rows:
            state = str(row["state"])
            pid = f"pid {row['pid']}" if row.get("pid") else ""
            usage = _usage(row)
            last = f"last: {row['last_exit']}" if row.get("last_exit") else ""
            name = str(row["name"]).ljust(width)
            crashes = f"crashes {row['crashes']:<3}  " if row.get("crashes") else ""
            counts = f"restarts {row['restarts']:<3}  {crashes}"
            plain = f"  {name}  {state:<10}  {pid:<10}  {usage}{counts}{last}"
            plain = plain.rstrip()[:columns]
            colour = _STATE_COLOURS.get(state, "")
            head = f"  {name}  "
            if colour and plain.startswith(head + state):
                plain = f"{head}{colour}{state}{_RESET}{plain[len(head) + len(state) :]}"
            lines.append(plain)
        with self._lock:
            self._erase()
            self._lines = lines
            self._draw()
            self._terminal.flush()

    def close(self) -> None:
        """Take the block away (the summary table follows)."""
        with self._lock:
            self._erase()
            self._lines = []
            self._terminal.flush()

    def _erase(self) -> None:
        if self._drawn:
            self._terminal.write(_UP_AND_CLEAR.format(self._drawn))
            self._drawn = 0

    def _draw(self) -> None:
        if self._lines:
            self._terminal.write("\n".join(self._lines) + "\n")
            self._drawn = len(self._lines)
