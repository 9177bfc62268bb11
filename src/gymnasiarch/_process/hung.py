"""A hung child, as its parent sees it: the watchdog's deadline, and the shape of its stack dump.

The deadline is one kernel timer per run, which the child's beats move
(:class:`WatchdogTimer`); the dump is faulthandler's, which names files and
lines only: :func:`with_source_lines` puts each frame's source line under
it and caps the whole, keeping the threads that matter.
"""

from __future__ import annotations

import dataclasses
import linecache
import os
import re
import sys

import anyio

from gymnasiarch import _platform
from gymnasiarch._backends.base import Launch
from gymnasiarch._context import BEAT_FRACTION
from gymnasiarch._process.output import HUNG_DUMP_LINES, InheritedFd
from gymnasiarch.exceptions import _main_thread_index, _split_dump

_FRAME = re.compile(r'  File "(?P<file>.+)", line (?P<line>\d+) in ')


class WatchdogTimer:
    """A run's watchdog deadline: one kernel timer, moved by each beat of the child's.

    A ``timerfd`` on ``CLOCK_MONOTONIC`` (the clock of ``time.monotonic()``,
    one for every process of a machine). A Python child holds the
    descriptor too (handed over as the output pipes are, so it works
    through the fork server) and moves the deadline itself at each beat;
    a program's beats (sd_notify) are moved here (``ChildProcess.beat``).
    The supervisor awaits the descriptor: it becomes readable only once the
    deadline passed without a beat. Empty (no descriptor) until :meth:`attach`.
    """

    def __init__(self) -> None:
        self.fd = -1
        # A Python child's deadline is its last beat plus the watchdog plus
        # this (a beat spacing, see ChildContext._beat); a program's, plus nothing.
        self.margin = 0.0

    def attach(self, launch: Launch) -> Launch:
        """Make the timer where *launch* has a watchdog; *launch*, handing it to a Python child."""
        if launch.watchdog is None:
            return launch
        self.fd = _platform.timerfd_create()
        self.margin = 0.0 if launch.command is not None else launch.watchdog * BEAT_FRACTION
        if launch.command is not None:
            return launch  # a program's beats come by sd_notify, to us
        return dataclasses.replace(launch, beats=InheritedFd(self.fd))

    def expire_at(self, when: float) -> None:
        """Move the deadline to *when* (``time.monotonic()`` seconds)."""
        if self.fd >= 0:
            _platform.timerfd_expire_at(self.fd, when)

    async def expired(self) -> float:
        """Once the deadline has passed without a beat: how long ago it passed, in seconds.

        The timer's expiry is read: its count says how late this read is
        (see ``_platform.timerfd_expire_at``), to a millisecond, however
        busy the event loop was when the deadline passed.
        """
        while True:
            await anyio.wait_readable(self.fd)
            try:
                count = int.from_bytes(os.read(self.fd, 8), sys.byteorder)
            except BlockingIOError:
                continue  # a beat moved the deadline between the wake-up and the read
            return max(0, count - 1) * _platform.TIMERFD_LATE_STEP

    def disarm(self) -> None:
        """Stop the timer (the run is found hung, or its child's work is over)."""
        if self.fd >= 0:
            _platform.timerfd_disarm(self.fd)

    def close(self) -> None:
        """Close the descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: Of each thread in a hung child's stack dump, its top and bottom frames are
#: kept (where it waits, and the code that led there); the frames between
#: are one line. Why: 98 threads 150 calls deep made a 13 KB error whose
#: main thread, dumped last, was cut off.
HUNG_TOP_FRAMES = 20
HUNG_BOTTOM_FRAMES = 10
#: Where a dump is longer than HUNG_DUMP_LINES even so, the other threads
#: keep this many top frames: where each waits (and how many wait there).
HUNG_BRIEF_FRAMES = 3


def _shape_thread(block: list[str], top: int, bottom: int) -> list[str]:
    """One dumped thread (its header, its lines), its frames past the cap left out, sourced."""
    frames = [i for i, line in enumerate(block) if line.startswith("  File ")]
    left_out = len(frames) - top - bottom
    dropped = set(frames[top : len(frames) - bottom] if left_out > 0 else ())
    shown: list[str] = []
    for i, line in enumerate(block):
        if i in dropped:
            if i == frames[top]:
                shown.append(f"  ... ({left_out} frames left out)")
            continue
        shown.append(line)
        frame = _FRAME.match(line)
        if frame is not None:
            source = linecache.getline(frame["file"], int(frame["line"])).strip()
            if source:
                shown.append(f"    {source}")
    return shown


def with_source_lines(lines: list[str]) -> str | None:
    """A faulthandler dump with each frame's source line under it, as a traceback shows it; capped.

    faulthandler names only the file, line and function (it runs in a
    signal handler); the line's text says what the thread was doing
    (``time.sleep(30)``, ``lock.acquire()``). Read here, in the process
    that started the child, which has the same files. Lines before the
    dump's first thread are the child's own output, left out.

    Capped at :data:`~gymnasiarch._process.output.HUNG_DUMP_LINES`: each
    thread's frames past :data:`HUNG_TOP_FRAMES` and
    :data:`HUNG_BOTTOM_FRAMES` are left out; where that is not enough, the
    other threads keep only their top :data:`HUNG_BRIEF_FRAMES`, and then
    whole threads go, from the middle of the dump: never the thread that
    dumped ("Current thread") nor the last one (the main thread, the
    oldest: faulthandler writes the newest first).
    """
    blocks, cut = _split_dump(lines)
    return fit_threads(blocks, cut) if blocks else None


def fit_threads(blocks: list[list[str]], cut: bool) -> str:
    """The dumped threads *blocks*, sourced and shaped to fit HUNG_DUMP_LINES (see there)."""
    shaped = [_shape_thread(block, HUNG_TOP_FRAMES, HUNG_BOTTOM_FRAMES) for block in blocks]
    # Never left out: the thread that dumped ("Current thread") and the main thread.
    pinned = {i for i, block in enumerate(blocks) if block[0].startswith("Current thread ")}
    main = _main_thread_index(blocks, cut)
    if main is not None:
        pinned.add(main)
    if sum(len(thread) + 1 for thread in shaped) > HUNG_DUMP_LINES:
        for i, block in enumerate(blocks):
            if i not in pinned:
                shaped[i] = _shape_thread(block, HUNG_BRIEF_FRAMES, 0)
    # Room for the "[N threads left out]" line, its blank line, and "...".
    budget = HUNG_DUMP_LINES - sum(len(shaped[i]) + 1 for i in pinned) - 3
    kept: set[int] = set(pinned)
    for i, thread in enumerate(shaped):
        if i not in pinned and len(thread) + 1 <= budget:
            kept.add(i)
            budget -= len(thread) + 1
    shown: list[str] = []
    for i, thread in enumerate(shaped):
        if i == len(shaped) - 1 and len(kept) < len(shaped):
            shown += [f"[{len(shaped) - len(kept)} threads left out]", ""]
        if i in kept:
            shown += [*thread, ""]
    if cut:
        shown.append("...")  # as faulthandler says it: more than 100 threads, the rest unknown
    return "\n".join(shown).rstrip()
