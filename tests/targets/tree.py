"""Targets for tests of a tree's order, nesting and ready values.

Each ``journal`` child appends what happens to it to a shared file, so a test
reads the order of starts, SIGTERMs and exits as the children saw it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from gymnasiarch import child_context


def note(path: str, line: str) -> None:
    """Append one line; O_APPEND makes each short write whole, whoever writes."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def journal(path: str, name: str, cleanup: float = 0.3) -> None:
    """Note start, SIGTERM and exit; the cleanup after SIGTERM takes *cleanup* seconds."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        note(path, f"term {name}")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    note(path, f"start {name}")
    try:  # a SIGTERM may come as soon as the supervisor has heard ready()
        child_context().ready()
        while True:
            time.sleep(3600)
    finally:
        time.sleep(cleanup)
        note(path, f"exit {name}")


def serve_on_port_zero() -> None:
    """Bind port 0 and announce the port the kernel chose, as an environment would."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        child_context().ready({"host": "127.0.0.1", "port": listener.getsockname()[1]})
        while True:
            time.sleep(3600)


def connect_to(port: int, host: str = "127.0.0.1") -> int:
    """Connect to an announced port, as an agent would; return the port."""
    with socket.create_connection((host, port), timeout=5):
        return port


def echo(value: Any) -> Any:
    return value


def read_file(path: str) -> str:
    return Path(path).read_text()


def talk() -> None:
    """Say something on stdout and through logging."""
    print("said", flush=True)
    logging.getLogger("sim").warning("logged")


def helper_threads_block_sigterm() -> dict[str, bool]:
    """Whether each of gymnasiarch's threads in this child blocks SIGTERM (and the main one)."""
    logging.getLogger("targets").warning("this record starts the log sender")
    bit = 1 << (signal.SIGTERM - 1)
    found = {}
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.name.startswith("gymnasiarch-"):
            status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
            blocked = next(line for line in status.splitlines() if line.startswith("SigBlk:"))
            found[thread.name] = bool(int(blocked.split()[1], 16) & bit)
    return found


def announce(value: Any) -> None:
    """Announce *value* as this child's ready value, then wait to be stopped."""
    child_context().ready(value)
    while True:
        time.sleep(3600)
