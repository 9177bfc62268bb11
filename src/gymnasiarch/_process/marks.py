"""The mark a child gives its descendants, so that an escaped one is still known as its own.

Both halves of the process layer need it: the child sets it
(:func:`mark_descendants`, in :mod:`~gymnasiarch._process.child`), the
parent reads it back from an escapee's ``/proc/PID/environ``
(:mod:`~gymnasiarch._process.subreaper`). It lives apart so that the
child's side imports nothing of the parent's.
"""

from __future__ import annotations

import os

#: The environment variable every child and its exec'd descendants carry.
MARKER = "GYMNASIARCH_CHILD"


def mark_descendants(supervisor_pid: int) -> None:
    """In a child: give its exec'd descendants the mark that names it (see the subreaper)."""
    os.environ[MARKER] = f"{supervisor_pid}:{os.getpid()}"
