"""Importing this sends SIGTERM (or ``GYMNASIARCH_TEST_SIGNAL``) to its importer, then takes 3 s.

Only in the process whose pid is in ``GYMNASIARCH_TEST_APP_PID`` (the fork
server, which may preload it, is left alone): the signal comes while the
supervisor checks its targets, before any child starts.
"""

from __future__ import annotations

import os
import signal
import time

if os.environ.get("GYMNASIARCH_TEST_APP_PID") == str(os.getpid()):
    os.kill(os.getpid(), signal.Signals[os.environ.get("GYMNASIARCH_TEST_SIGNAL", "SIGTERM")])
    time.sleep(3)
    imported = True  # absent while the import still runs


def never_started() -> None:
    """The target: the signal stops the tree before it starts."""
