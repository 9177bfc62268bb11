"""Targets for tests/test_how_an_end_is_told.py."""

from __future__ import annotations

import os
import signal
import time

from gymnasiarch import child_context


def close_the_timer_fds_and_return(value: int) -> int:
    """Close every timerfd this process holds (the watchdog's too), as a careless daemon might."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[timerfd]":
                os.close(int(name))
        except OSError:  # the listing's own fd, gone by now
            continue
    return value


def spin_near_the_hard_cpu_limit_then_wait(seconds: float) -> None:
    """Spend *seconds* of CPU (SIGXCPU ignored), say ready, then wait for SIGKILL.

    *seconds* just under the hard RLIMIT_CPU: the kernel does not kill it,
    its CPU time reads as if it had. SIGTERM is ignored: only the
    supervisor's SIGKILL after its stop's grace ends it.
    """
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    context = child_context()  # before the spin: its ready() costs no CPU to speak of then
    end = seconds
    while time.process_time() < end:  # the CPU time is the point: no wait to make event-driven
        pass
    context.ready()
    time.sleep(3600)
