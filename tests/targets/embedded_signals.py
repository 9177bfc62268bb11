"""An application that embeds a supervisor and has signal handlers of its own.

Usage: python -m targets.embedded_signals BACKEND MODE JOURNAL

MODE ``storm``: the application's own SIGINT/SIGTERM/SIGHUP handlers count
signals; a SIGTERM stops the supervisor, and SIGTERMs and SIGHUPs keep coming
every 2 ms while the supervisor starts and stops, and 10 more after it is done. Prints
one JSON line: whether the handlers are the application's again, and how
many signals its handlers saw.

MODE ``overlap``: two supervisors whose lives overlap, left in either order;
afterwards the handlers are the application's and a SIGTERM reaches them.

MODE ``overlap-signal``: two supervisors whose lives overlap; one SIGTERM to
the process stops both (it is the whole application's stop).

MODE ``signal-during-import``: a SIGTERM arrives while the supervisor imports
its targets (the module sends it as it is imported, then takes 3 s): the
supervisor stops the start at once, and the application's handler does not
see the signal.

MODE ``ignored``: the application ignores SIGINT and SIGHUP (as under
``nohup``, or as a shell's background job); SIGINT, SIGHUP, then SIGTERM come
while the supervisor runs: only the SIGTERM stops it, and the two stay ignored.

MODE ``double-sigint``: one Ctrl-C forwarded twice, 10 ms apart (as ``timeout
--foreground`` does). The children journal their stop: a graceful stop lets
them finish their 0.3 s of cleanup; a kill would not.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from types import FrameType

import anyio

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch.exceptions import SignalInterruptError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
seen: list[int] = []


def mine(signum: int, frame: FrameType | None) -> None:
    seen.append(signum)


def tree(journal: str) -> Supervisor:
    return Supervisor(
        [
            ChildSpec(n, "targets.tree:journal", args=(journal, n), ready_timeout=10)
            for n in ("a", "b")
        ]
    )


async def storm(journal: str) -> dict[str, object]:
    sup = tree(journal)
    try:
        async with sup:
            os.kill(os.getpid(), signal.SIGTERM)
            await sup.wait()
    except SignalInterruptError:
        pass
    return {}


def send_storm(done: threading.Event) -> None:
    """SIGTERMs and SIGHUPs every 2 ms until the supervisor is done, then 10 more."""
    after = 10
    i = 0
    while after:
        os.kill(os.getpid(), signal.SIGTERM if i % 2 else signal.SIGHUP)
        time.sleep(0.002)
        i += 1
        if done.is_set():
            after -= 1


async def overlapping(journal: str) -> dict[str, object]:
    """Two supervisors whose lives overlap, in tasks of their own, left in either order."""
    results = {}
    for order in ("first-leaves-first", "first-leaves-last"):
        first, second = tree(journal), tree(journal)
        async with anyio.create_task_group() as group:
            for sup in (first, second):
                with sup.events() as events:
                    group.start_soon(sup.run)
                    async for event in events:  # entered: its handlers are in
                        if event.kind == "ready" and event.child == "b":
                            break
            leaving = (first, second) if order == "first-leaves-first" else (second, first)
            for sup in leaving:
                with sup.events() as events:
                    sup.stop()
                    async for _ in events:  # until its stream ends: it has left
                        pass
        before = len(seen)
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(0.05)
        restored = all(signal.getsignal(s) is mine for s in SIGNALS)
        results[order] = {"restored": restored, "heard": len(seen) - before}
    return results


async def overlap_signal(journal: str) -> dict[str, object]:
    """A and B run; one SIGTERM: each says how it ended."""
    ended: dict[str, object] = {}

    async def run(name: str, sup: Supervisor) -> None:
        try:
            await sup.run()
        except SignalInterruptError as error:
            ended[name] = error.signal_name
        else:
            ended[name] = "ran to its end"

    first, second = tree(journal), tree(journal)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for name, sup in (("A", first), ("B", second)):
                with sup.events() as events:
                    group.start_soon(run, name, sup)
                    async for event in events:  # entered: its handlers are in
                        if event.kind == "ready" and event.child == "b":
                            break
            os.kill(os.getpid(), signal.SIGTERM)
    return {"ended": ended, "app_heard": len(seen)}


async def signal_during_import(journal: str) -> dict[str, object]:
    os.environ["GYMNASIARCH_TEST_APP_PID"] = str(os.getpid())
    sup = Supervisor([ChildSpec("a", "targets.signals_its_app_on_import:never_started")])
    error = None
    try:
        with anyio.fail_after(20):
            await sup.run()
    except SignalInterruptError as caught:
        error = caught.signal_name
    module = sys.modules.get("targets.signals_its_app_on_import")
    return {
        "error": error,
        "app_heard": len(seen),
        "import_still_running": module is not None and not hasattr(module, "imported"),
    }


def press_forwarded_twice() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


async def double_sigint(journal: str) -> dict[str, object]:
    sup = tree(journal)
    try:
        async with sup:
            # From another thread, as from another process: the body's
            # cancellation by the first must not keep the second from coming.
            threading.Thread(target=press_forwarded_twice).start()
            await sup.wait()
    except SignalInterruptError as error:
        return {"error": error.signal_name}
    return {"error": None}


async def ignored(journal: str) -> dict[str, object]:
    sup = tree(journal)
    try:
        with anyio.fail_after(20):
            async with sup:
                await sup.wait_ready("b")
                for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
                    os.kill(os.getpid(), signum)  # delivered in order, before the call returns
                await sup.wait()
    except SignalInterruptError as error:
        stopped_by: str | None = error.signal_name
    else:
        stopped_by = None
    still_ignored = [signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGHUP)]
    return {"stopped_by": stopped_by, "still_ignored": still_ignored, "app_heard": len(seen)}


def main() -> None:
    backend, mode, journal = sys.argv[1:4]
    for signum in SIGNALS:
        signal.signal(signum, mine)
    if mode == "storm":
        # The storm starts while the supervisor is stopping and goes on after it.
        done = threading.Event()
        storm_thread = threading.Timer(0.05, send_storm, args=(done,))
        storm_thread.start()
        anyio.run(storm, journal, backend=backend)
        done.set()
        storm_thread.join()
        restored = all(signal.getsignal(s) is mine for s in SIGNALS)
        print(json.dumps({"restored": restored, "seen": len(seen)}), flush=True)
    elif mode == "overlap":
        print(json.dumps(anyio.run(overlapping, journal, backend=backend)), flush=True)
    elif mode == "overlap-signal":
        print(json.dumps(anyio.run(overlap_signal, journal, backend=backend)), flush=True)
    elif mode == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        print(json.dumps(anyio.run(ignored, journal, backend=backend)), flush=True)
    elif mode == "signal-during-import":
        print(json.dumps(anyio.run(signal_during_import, journal, backend=backend)), flush=True)
    else:
        result = anyio.run(double_sigint, journal, backend=backend)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
