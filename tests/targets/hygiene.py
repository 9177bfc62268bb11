"""Children for the fork server's and the child's hygiene (issue 14, items 6, 10-12).

As a script (``python -m targets.hygiene MODE ARG``), a first supervisor in a
fresh process:

``daemon PIDFILE``
    One child starts a daemon that keeps nothing it need not (see
    :func:`start_daemon`) and returns; the supervisor ends. Prints one JSON
    line: the pids of the fork server and of the resource tracker.
``preload MODULE``
    The application configures itself, then imports its module *MODULE*
    (:mod:`targets.needs_setup`, :mod:`targets.exits_on_import`); a child's
    target lives there, so the fork server preloads it, where it fails to
    import. Prints the error the caller gets and its cause's text.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
from multiprocessing import resource_tracker

import anyio

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._process.forkserver import SERVER
from gymnasiarch.exceptions import InitializationFailedError
from targets import needs_setup_state

LIST_FDS = """
import os
open_fds = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    open_fds.append([fd, os.readlink(f"/proc/self/fd/{fd}")])
print(open_fds)
"""


def fds_of_an_execd_program() -> list[list[object]]:
    """The descriptors above stderr that a program executed by this child holds.

    ``close_fds=False``: as ``os.system`` or a ``fork`` and ``exec`` would,
    it passes on whatever is not close-on-exec.
    """
    done = subprocess.run(
        [sys.executable, "-c", LIST_FDS], close_fds=False, capture_output=True, check=True
    )
    found: list[list[object]] = eval(done.stdout)  # our own program's repr
    return found


def start_daemon(pidfile: str) -> None:
    """Start a daemon (fork, ``setsid``, fork, exec) and return at once.

    Like a daemon of a shell script it closes nothing, and it runs with an
    empty environment under its own name, so the subreaper cannot tell it
    came from us (see gymnasiarch._process.subreaper): only its descriptors tie it to
    us. Its pid goes to *pidfile* (the test ends it).
    """
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            # Returned only once the daemon has exec'd: until then it is a
            # copy of this child, with its mark and title, and a look for
            # escapees at this child's exit would rightly stop it as ours.
            exec_done, exec_pending = os.pipe2(os.O_CLOEXEC)
            daemon = os.fork()
            if daemon == 0:
                os.execve("/bin/sleep", ["sleep", "3600"], {})
            os.close(exec_pending)
            os.read(exec_done, 1)  # EOF: its copy of the pipe closed with the exec
            with open(pidfile, "w") as file:
                file.write(str(daemon))
        finally:
            os._exit(0)
    os.waitpid(middle, 0)


def _crash_here() -> None:
    ctypes.string_at(0)  # SIGSEGV in C code: faulthandler names this line


def segfault_deep(depth: int) -> None:
    """Recurse *depth* frames deep, then crash in C code."""
    if depth:
        segfault_deep(depth - 1)
    else:
        _crash_here()


async def _daemon_script(pidfile: str) -> None:
    spec = ChildSpec("d", "targets.hygiene:start_daemon", args=(pidfile,), restart="temporary")
    await Supervisor([spec]).run()
    tracker = resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
    print(json.dumps([SERVER.pid, tracker]), flush=True)


async def _preload_script(module: str) -> None:
    needs_setup_state.configured = True  # the application's setup...
    importlib.import_module(module)  # ...then its module

    try:
        await Supervisor([ChildSpec("n", f"{module}:run", ready_timeout=10)]).run()
    except InitializationFailedError as error:
        print(
            json.dumps(
                {
                    "error": str(error),
                    "cause": repr(error.__cause__),
                    "traceback": str(getattr(error.__cause__, "__cause__", "")),
                }
            )
        )


if __name__ == "__main__":
    if sys.argv[1] == "daemon":
        anyio.run(_daemon_script, sys.argv[2])
    else:
        anyio.run(_preload_script, sys.argv[2])
