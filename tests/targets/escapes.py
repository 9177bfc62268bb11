"""Children whose subprocesses escape their group, and a supervisor for fork-server faults.

As a script (``python -m targets.escapes N``) it runs a tree of N children
(``c0`` ...) and answers one JSON line per command read from stdin:
``status``, ``start NAME``, ``restart NAME``. Each answer (and the first line,
printed once every child is ready) is ``{"children": {name: [pid, restarts]},
"server": fork server pid}``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import anyio

from gymnasiarch import ChildSpec, Supervisor, child_context
from gymnasiarch._process.forkserver import SERVER


def _double_fork_daemon() -> int:
    """Fork, ``setsid()``, fork again, let the middle process exit; the daemon's pid."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.close(read_end)
            os.close(write_end)
            while True:  # a daemon: it ends when somebody ends it
                time.sleep(3600)
        os.write(write_end, str(daemon).encode())
        os._exit(0)
    os.close(write_end)
    pid = int(os.read(read_end, 32))
    os.close(read_end)
    os.waitpid(middle, 0)
    return pid


def _shell_daemon() -> int:
    """``setsid sleep 3600 &`` from a shell: an exec'd daemon; its pid."""
    shell = subprocess.run(
        ["sh", "-c", "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(shell.stdout)


def daemons_then_sleep(pidfile: str) -> None:
    """Start a Python daemon and a shell daemon, write their pids to *pidfile*, be ready."""
    pids = [_double_fork_daemon(), _shell_daemon()]
    with open(pidfile + ".tmp", "w") as file:
        json.dump(pids, file)
    os.rename(pidfile + ".tmp", pidfile)
    child_context().ready(pids)
    while True:
        time.sleep(3600)


def daemons_then_return(pidfile: str) -> list[int]:
    """The same daemons, then the target returns: they must not outlive their child."""
    pids = [_double_fork_daemon(), _shell_daemon()]
    with open(pidfile, "w") as file:
        json.dump(pids, file)
    return pids


def _daemon_on_sigterm(journal: str, name: str, *, ends: bool) -> int:
    """A double-fork daemon that notes a SIGTERM in *journal* and then ends, or ignores it."""
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:

            def noted(signum: int, frame: object) -> None:
                with open(journal, "a") as file:
                    file.write(f"{name} got SIGTERM\n")
                if ends:
                    os._exit(0)

            signal.signal(signal.SIGTERM, noted)
            os.write(write_end, str(os.getpid()).encode().ljust(16))
            while True:
                time.sleep(3600)
        os._exit(0)
    pid = int(os.read(read_end, 16))
    os.close(read_end)
    os.close(write_end)
    os.wait()
    return pid


def stubborn_with_daemons(journal: str) -> None:
    """Ignore SIGTERM; start a daemon that ends on SIGTERM and one that only notes it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [
        _daemon_on_sigterm(journal, "polite", ends=True),
        _daemon_on_sigterm(journal, "stubborn", ends=False),
    ]
    with open(journal + ".pids", "w") as file:
        json.dump(pids, file)
    child_context().ready(pids)
    while True:
        time.sleep(3600)


def polite_daemon_then_return(journal: str) -> int:
    """Start a daemon that ends on SIGTERM, then return: the daemon is asked first."""
    return _daemon_on_sigterm(journal, "polite", ends=True)


def ready_then_sleep() -> None:
    """Be ready, then sleep until stopped."""
    child_context().ready()
    while True:
        time.sleep(3600)


def _status(sup: Supervisor) -> str:
    rows = sup.which_children()
    children = {c.name: [c.pid, c.restarts] for c in rows}
    exits = {
        c.name: [c.last_exit.exitcode, c.last_exit.signum] for c in rows if c.last_exit is not None
    }
    return json.dumps({"children": children, "exits": exits, "server": SERVER.pid})


async def main(count: int) -> None:
    """Run the tree and answer commands (see the module's doc)."""
    specs = [
        ChildSpec(f"c{i}", "targets.escapes:ready_then_sleep", ready_timeout=10)
        for i in range(count)
    ]
    stdin = anyio.wrap_file(sys.stdin)
    async with Supervisor(specs, start_order="parallel", handle_signals=False) as sup:
        print(_status(sup), flush=True)
        async for line in stdin:
            command, _, name = line.strip().partition(" ")
            if command == "start":
                spec = ChildSpec(name, "targets.escapes:ready_then_sleep", ready_timeout=10)
                await sup.start_child(spec)
            elif command == "restart":
                with sup.events() as events:
                    await sup.restart_child(name)
                    async for event in events:
                        if event.kind == "ready" and event.child == name:
                            break
            print(_status(sup), flush=True)


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]))
