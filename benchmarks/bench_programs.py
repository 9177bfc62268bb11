"""Issue 16's figures: command children (programs) beside ``subprocess.Popen``.

P1: ``start_child()`` of a program (``ready=None``) until it has been exec'd,
beside ``subprocess.Popen``, which returns once its child has exec'd (the same
close-on-exec pipe). P2: SIGKILL of a running program until the supervisor's
``exited`` event, beside a bare pidfd wait. P3: a program that speaks
sd_notify, from the start until READY=1 is seen, beside ``Popen`` and a plain
datagram socket read. Both sides run in the same process, taking turns.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio

from benchmarks._report import progress, row
from gymnasiarch import ChildSpec, Supervisor, ready

LONG = ["sleep", "1000"]
NOTIFY = (
    "import os, socket\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.connect(os.environ['NOTIFY_SOCKET'])\n"
    "s.send(b'READY=1')\n"
    "import time; time.sleep(1000)\n"
)


def _popen_start() -> float:
    t0 = time.perf_counter()
    process = subprocess.Popen(LONG)
    elapsed = time.perf_counter() - t0
    process.kill()
    process.wait()
    return elapsed


def _popen_kill() -> float:
    process = subprocess.Popen(LONG)
    pidfd = os.pidfd_open(process.pid)
    try:
        t0 = time.perf_counter()
        os.kill(process.pid, signal.SIGKILL)
        select.select([pidfd], [], [])
        elapsed = time.perf_counter() - t0
    finally:
        os.close(pidfd)
        process.wait()
    return elapsed


def _popen_notify() -> float:
    with (
        tempfile.TemporaryDirectory() as folder,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = os.path.join(folder, "notify")
        sock.bind(path)
        t0 = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", NOTIFY], env={**os.environ, "NOTIFY_SOCKET": path}
        )
        while b"READY=1" not in sock.recv(4096):
            pass
        elapsed = time.perf_counter() - t0
        process.kill()
        process.wait()
    return elapsed


async def _ours(samples: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"start": [], "kill": [], "notify": []}
    async with Supervisor([ChildSpec("idle", command=LONG)]) as sup:
        with sup.events() as events:
            for i in range(samples):
                t0 = time.perf_counter()
                await sup.start_child(ChildSpec(f"p{i}", command=LONG, restart="temporary"))
                found["start"].append(time.perf_counter() - t0)
                (info,) = [r for r in sup.walk() if r.name == f"p{i}"]
                assert info.pid is not None
                t0 = time.perf_counter()
                os.kill(info.pid, signal.SIGKILL)
                async for event in events:
                    if event.kind == "exited" and event.child == f"p{i}":
                        break
                found["kill"].append(time.perf_counter() - t0)
                spec = ChildSpec(
                    f"n{i}", command=[sys.executable, "-c", NOTIFY], ready=ready.Notify()
                )
                t0 = time.perf_counter()
                await sup.start_child(spec)
                found["notify"].append(time.perf_counter() - t0)
                await sup.terminate_child(f"n{i}")
    return found


def collect(quick: bool = False) -> list[dict[str, Any]]:
    """P1-P3: command children beside subprocess.Popen."""
    samples = 5 if quick else 20
    progress("programs", f"P1-P3, {samples} samples each")
    base = {"start": [], "kill": [], "notify": []}  # type: dict[str, list[float]]
    for _ in range(samples):
        base["start"].append(_popen_start())
        base["kill"].append(_popen_kill())
        base["notify"].append(_popen_notify())
    ours = anyio.run(_ours, samples)
    return [
        row(
            "P1",
            "P1 start_child() of a program -> exec'd (ready=None)",
            ours["start"],
            baseline="subprocess.Popen until its child has exec'd",
            base=base["start"],
            target="<= 1.5x",
        ),
        row(
            "P2",
            "P2 SIGKILL of a program -> exited event",
            ours["kill"],
            baseline="bare pidfd wait in the parent",
            base=base["kill"],
            target="<= 2x",
        ),
        row(
            "P3",
            "P3 start_child() of an sd_notify program -> READY=1 seen",
            ours["notify"],
            baseline="subprocess.Popen and a plain datagram socket read",
            base=base["notify"],
            target="<= 1.2x",
        ),
    ]
