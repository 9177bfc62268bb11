"""Resource limits (issue 17): rlimits set in the child, max_memory sampled by the supervisor.

Real children hit real limits: the kernel refuses memory and descriptors,
sends SIGXCPU, and the supervisor stops a child whose group grew past its
ceiling.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from gymnasiarch import Backoff, ChildSpec, Event, Supervisor
from gymnasiarch._backends.base import ExitStatus, Launch
from gymnasiarch._backends.ray_host import HOST_LOGGERS, ChildHost, _status_payload
from gymnasiarch._cli.control import status_rows
from gymnasiarch._cli.live import LiveStatus
from gymnasiarch._platform import group_usage
from gymnasiarch._process import sampler
from gymnasiarch._spec import OPEN_FILES_MIN, format_size, parse_size
from gymnasiarch._wire import logclient
from gymnasiarch.cli import _status_table
from gymnasiarch.exceptions import (
    ChildOverLimitError,
    FieldTypeError,
    FieldValueError,
    InitializationFailedError,
    PrematureTaskDeathError,
)
from gymnasiarch.ray_backend import _status_from_payload
from gymnasiarch.ready import Notify
from gymnasiarch.testing import wait_for
from gymnasiarch.treefile import TreeFileError, load_tree

T = "targets.limits"
MIB = 2**20
FAST = Backoff(base=0.01, cap=0.01, jitter=0)


# -- the spec ------------------------------------------------------------------------


def test_sizes_are_read_as_people_write_them() -> None:
    assert parse_size("512MiB") == 512 * MIB
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5G") == 3 * 2**29
    assert parse_size("1.5g") == 3 * 2**29
    assert parse_size("64 KiB") == 65536
    assert parse_size("100MB") == 100_000_000
    assert parse_size("100M") == 100 * MIB
    assert parse_size("4096") == parse_size("4096B") == 4096
    for bad in ("", "MiB", "2 lots", "1.5.2G", "-1G", "2iB", "1e9"):
        with pytest.raises(ValueError, match="expected a size"):
            parse_size(bad)
    assert format_size(1536 * MIB) == "1.5 GiB"
    assert format_size(100 * MIB) == "100 MiB"


def test_limits_are_checked_where_the_spec_is_written() -> None:
    spec = ChildSpec(
        "x",
        "os:getpid",
        limits={"memory": "2GiB", "open_files": 4096, "cpu_seconds": 0.5, "core_dumps": False},
        max_memory="1GiB",
    )
    assert spec.limits == {
        "memory": 2 * 2**30,
        "open_files": 4096,
        "cpu_seconds": 1,  # whole seconds, rounded up
        "core_dumps": False,
    }
    assert spec.max_memory == 2**30
    cases: list[tuple[object, type[Exception], str]] = [
        ({"memroy": "1G"}, FieldValueError, r"limits\.memroy: unknown limit 'memroy'"),
        ({"memory": "a lot"}, FieldValueError, r"limits\.memory: expected a size"),
        ({"memory": 0}, FieldValueError, r"limits\.memory: expected a size above 0"),
        ({"memory": 1.5}, FieldTypeError, r"limits\.memory: expected a size"),
        ({"open_files": 10.5}, FieldTypeError, r"limits\.open_files: expected a whole number"),
        ({"open_files": True}, FieldTypeError, r"limits\.open_files"),
        ({"cpu_seconds": -1}, FieldValueError, r"limits\.cpu_seconds: expected a number above 0"),
        ({"core_dumps": "no"}, FieldTypeError, r"limits\.core_dumps: must be True or False"),
        ("memory=1G", FieldTypeError, r"limits: expected a mapping"),
    ]
    for limits, kind, message in cases:
        with pytest.raises(kind, match=rf"child 'x': {message}"):
            ChildSpec("x", "os:getpid", limits=limits)  # type: ignore[arg-type]
    with pytest.raises(FieldValueError, match=r"child 'x': max_memory: expected a size"):
        ChildSpec("x", "os:getpid", max_memory="1 GiBB")


def test_over_limit_errors_pickle_with_their_figures() -> None:
    error = ChildOverLimitError(
        "over", child="c", pid=7, limit="max_memory", limit_bytes=10, measured=12
    )
    back = pickle.loads(pickle.dumps(error))
    assert (back.limit, back.limit_bytes, back.measured, back.child) == ("max_memory", 10, 12, "c")


# -- rlimits in the child --------------------------------------------------------------


async def test_a_python_child_over_its_memory_limit_gets_memory_error_and_says_so() -> None:
    ours = resource.getrlimit(resource.RLIMIT_DATA)
    spec = ChildSpec(
        "hog",
        f"{T}:allocate_until_refused",
        limits={"memory": "200MiB"},
        restart="temporary",
        significant=True,
    )
    with pytest.raises(PrematureTaskDeathError) as caught:
        async with Supervisor([spec]) as sup:
            await sup.wait()
    error = caught.value
    cause = error.__cause__
    assert isinstance(cause, MemoryError)
    assert "over limits.memory of 209715200 bytes (200 MiB, RLIMIT_DATA" in str(cause)
    assert error.remote_traceback is not None
    assert "allocate_until_refused" in error.remote_traceback
    assert "MemoryError: over limits.memory" in error.remote_traceback
    assert "raised MemoryError: over limits.memory" in str(error)
    # The supervisor is unharmed: its own limit untouched, its next tree runs.
    assert resource.getrlimit(resource.RLIMIT_DATA) == ours
    async with Supervisor([ChildSpec("ok", f"{T}:limits_seen", restart="temporary")]) as again:
        seen = (await again.wait())["ok"]
    assert tuple(seen["data"]) == ours


async def test_a_child_opening_files_past_open_files_gets_emfile() -> None:
    spec = ChildSpec(
        "opener",
        f"{T}:open_until_refused",
        limits={"open_files": 64},
        restart="temporary",
        significant=True,
    )
    with pytest.raises(PrematureTaskDeathError) as caught:
        async with Supervisor([spec]) as sup:
            await sup.wait()
    cause = caught.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.EMFILE
    assert "Too many open files" in str(caught.value)


async def test_limits_are_what_the_child_runs_with() -> None:
    spec = ChildSpec(
        "seer",
        f"{T}:limits_seen",
        limits={"core_dumps": False, "open_files": 100, "memory": "1GiB", "cpu_seconds": 60},
        restart="temporary",
    )
    async with Supervisor(
        [spec, ChildSpec("free", f"{T}:limits_seen", restart="temporary")]
    ) as sup:
        results = await sup.wait()
    seen = results["seer"]
    assert tuple(seen["core"]) == (0, 0)
    assert tuple(seen["nofile"]) == (100, 100)
    assert tuple(seen["data"]) == (2**30, 2**30)
    assert tuple(seen["cpu"]) == (60, 65)  # SIGXCPU at 60 s, SIGKILL 5 s later
    # A sibling without limits keeps the supervisor's.
    assert tuple(results["free"]["nofile"]) == resource.getrlimit(resource.RLIMIT_NOFILE)


async def test_cpu_seconds_ends_a_spinning_child_with_sigxcpu() -> None:
    spec = ChildSpec(
        "spinner",
        f"{T}:spin",
        limits={"cpu_seconds": 1, "core_dumps": False},
        restart="temporary",
        significant=True,
    )
    with pytest.raises(PrematureTaskDeathError) as caught:
        async with Supervisor([spec]) as sup:
            await sup.wait()
    assert caught.value.signum == signal.SIGXCPU
    assert "killed by SIGXCPU (over limits.cpu_seconds of 1 s)" in str(caught.value)


async def test_a_command_child_runs_under_its_limits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gymnasiarch.child")
    spec = ChildSpec(
        "sh",
        command=["sh", "-c", "echo files=$(ulimit -n) core=$(ulimit -c) cpu=$(ulimit -t)"],
        limits={"open_files": 123, "core_dumps": False, "cpu_seconds": 30},
        restart="temporary",
    )
    async with Supervisor([spec]) as sup:
        await sup.wait()
    lines = [r.getMessage() for r in caplog.records if r.name == "gymnasiarch.child.sh"]
    assert "files=123 core=0 cpu=30" in lines


async def test_a_limit_above_the_hard_limit_fails_the_start_not_in_a_loop() -> None:
    # Above fs.nr_open, which not even root may pass.
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())  # noqa: ASYNC240 - a /proc file
    specs = [
        ChildSpec("greedy", f"{T}:spin", limits={"open_files": nr_open * 2}),
        ChildSpec("greedy-program", command=["true"], limits={"open_files": nr_open * 2}),
    ]
    for spec in specs:
        sup = Supervisor([spec], backoff=FAST)
        with sup.events() as events:
            with pytest.raises(InitializationFailedError) as caught:
                async with sup:
                    pass
            starts = []
            while True:
                try:
                    event = events.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                starts += [event] if event.kind == "started" else []
        assert f"limits.open_files = {nr_open * 2} cannot be set" in str(caught.value)
        assert "the hard limit here is" in str(caught.value)
        assert len(starts) == 1


def test_limits_setrlimit_cannot_take_or_a_child_cannot_start_with_are_refused() -> None:
    too_big = r"expected at most 2\*\*62 \(4611686018427387904, as setrlimit takes\)"
    cases: list[tuple[dict[str, object], str]] = [
        ({"open_files": 10**30}, rf"limits\.open_files: {too_big}, got 10{{30}}"),
        ({"cpu_seconds": 1e30}, rf"limits\.cpu_seconds: {too_big}, got 1e\+30"),
        ({"memory": 2**70}, rf"limits\.memory: {too_big}, got {2**70}"),
        ({"memory": "8192PiB"}, rf"limits\.memory: {too_big}, got .8192PiB."),
        ({"memory": 10**5000}, rf"limits\.memory: {too_big}, got an int of about 2\*\*16609"),
        ({"memory": "1" + "0" * 400 + "PiB"}, r"limits\.memory: expected a size of fewer bytes"),
        ({"open_files": 15}, r"limits\.open_files: expected at least 16 \(the descriptors"),
    ]
    for limits, message in cases:
        with pytest.raises(FieldValueError, match=rf"child 'x': {message}"):
            ChildSpec("x", "os:getpid", limits=limits)  # type: ignore[arg-type]
    ChildSpec("x", "os:getpid", limits={"open_files": 16, "memory": 2**62, "cpu_seconds": 2**62})


async def test_a_limit_too_large_for_setrlimit_fails_the_start_with_its_name() -> None:
    # A spec that got past ChildSpec's check (changed after it): setrlimit's
    # OverflowError is reported as the limit that cannot be set, once.
    spec = ChildSpec("huge", f"{T}:spin", limits={"memory": "1GiB"})
    object.__setattr__(spec, "limits", {"memory": 2**70})
    sup = Supervisor([spec], backoff=FAST)
    with sup.events() as events:
        with pytest.raises(InitializationFailedError) as caught:
            async with sup:
                pass
        starts = [event for event in _drained(events) if event.kind == "started"]
    assert f"limits.memory = {2**70} cannot be set" in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert len(starts) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_an_async_child_starts_and_logs_with_the_fewest_open_files(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # OPEN_FILES_MIN holds the bootstrap (trio's needed 13 descriptors) and
    # the log connection: the record comes over the wire, not via stderr.
    caplog.set_level(logging.INFO, "targets")
    spec = ChildSpec(
        "few",
        "targets.basic:async_add",
        args=(2, 3),
        async_backend=backend,
        limits={"open_files": OPEN_FILES_MIN},
        restart="temporary",
    )
    async with Supervisor(
        [
            spec,
            ChildSpec(
                "lines",
                "targets.basic:log_lines",
                args=(1,),
                limits={"open_files": OPEN_FILES_MIN},
                restart="temporary",
            ),
        ]
    ) as sup:
        results = await sup.wait()
    assert results == {"few": 5, "lines": 1}
    assert [r.getMessage() for r in caplog.records if r.name == "targets.basic"] == ["line 0"]


# -- max_memory, sampled ---------------------------------------------------------------


async def test_a_child_over_max_memory_is_stopped_restarted_and_named() -> None:
    spec = ChildSpec(
        "grower", f"{T}:hold_resident", args=(150 * MIB,), max_memory="100MiB", shutdown=2
    )
    sup = Supervisor([spec], backoff=FAST, max_restarts=1, max_seconds=60)
    seen: dict[str, Event] = {}

    async def until_it_gives_up(events: MemoryObjectReceiveStream[Event]) -> None:
        async with sup:
            seen["first"] = await wait_for(sup, "exited", child="grower", events=events)
            seen["restarted"] = await wait_for(sup, "started", child="grower", events=events)
            await anyio.sleep_forever()  # the second run goes over too: the tree gives up

    with sup.events() as events, pytest.raises(PrematureTaskDeathError) as caught:
        await until_it_gives_up(events)
    first, restarted = seen["first"], seen["restarted"]
    assert first.signum == signal.SIGTERM  # stopped gracefully: the stop signal was enough
    assert first.detail is not None
    assert "over its max_memory of 100 MiB" in first.detail
    assert restarted.restarts == 1
    over = caught.value.__cause__
    assert isinstance(over, ChildOverLimitError)
    assert over.limit == "max_memory"
    assert over.limit_bytes == 100 * MIB
    assert over.measured is not None
    assert over.measured > 150 * MIB
    assert format_size(over.measured) in str(over)
    assert "over its max_memory of 100 MiB" in str(caught.value)


async def test_a_child_under_max_memory_is_left_alone() -> None:
    spec = ChildSpec("small", f"{T}:hold_resident", args=(10 * MIB,), max_memory="500MiB")
    async with Supervisor([spec]) as sup:
        with sup.events() as events:
            await anyio.sleep(2.5)  # two samples and more
            assert [e for e in _drained(events) if e.kind == "exited"] == []
        (row,) = sup.which_children()
        assert row.state in ("starting", "running")
        assert row.restarts == 0


async def test_memory_and_cpu_time_are_read_when_asked() -> None:
    specs = [
        ChildSpec("busy", f"{T}:hold_and_spin", args=(60 * MIB, 0.3), ready_timeout=30),
        ChildSpec("once", "os:getpid", restart="temporary"),
    ]
    sup = Supervisor(specs)
    with sup.events() as events:
        async with sup:  # busy is ready once it has spun
            await wait_for(sup, "exited", child="once", events=events)
            rows = {row.name: row for row in sup.walk()}
            status = {row["name"]: row for row in status_rows(sup)}
    assert rows["busy"].memory is not None
    assert rows["busy"].memory > 60 * MIB
    assert rows["busy"].cpu_seconds is not None
    assert rows["busy"].cpu_seconds >= 0.3
    assert rows["once"].memory is None  # not running: nothing to read
    assert rows["once"].cpu_seconds is None
    assert status["busy"]["memory"] > 60 * MIB
    assert status["busy"]["cpu_seconds"] >= 0.3
    assert status["once"]["memory"] is None


def test_status_shows_memory_and_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {
            "name": "a",
            "pid": 1,
            "state": "running",
            "uptime": 3.0,
            "restarts": 0,
            "crashes": 0,
            "last_exit": None,
            "memory": 150 * MIB,
            "cpu_seconds": 12.25,
        },
        {
            "name": "b",
            "pid": None,
            "state": "exited",
            "uptime": None,
            "restarts": 0,
            "crashes": 0,
            "last_exit": "exit code 0",
            "memory": None,
            "cpu_seconds": None,
        },
    ]
    _status_table(rows)
    out = capsys.readouterr().out
    header, first, second = out.splitlines()[:3]
    assert "memory" in header
    assert "cpu" in header
    assert "150 MiB" in first
    assert "12.2s" in first or "12.3s" in first
    assert " - " in second


def test_the_live_view_shows_memory_and_cpu() -> None:
    screen = io.StringIO()
    live = LiveStatus(screen, "tree")
    live.update(
        [
            {
                "name": "a",
                "pid": 7,
                "state": "running",
                "restarts": 0,
                "memory": 150 * MIB,
                "cpu_seconds": 2.5,
            },
            {
                "name": "b",
                "pid": None,
                "state": "exited",
                "restarts": 0,
                "memory": None,
                "cpu_seconds": None,
            },
        ]
    )
    text = screen.getvalue()
    assert "150 MiB" in text
    assert "2.5s cpu" in text
    assert text.count("s cpu") == 1


def test_the_live_view_says_when_memory_and_cpu_were_read() -> None:
    # The block is redrawn at lifecycle events only: a quiet tree's figures age.
    screen = io.StringIO()
    live = LiveStatus(screen, "tree")
    row = {"name": "a", "pid": 7, "state": "running", "restarts": 0}
    live.update([{**row, "memory": None, "cpu_seconds": None}])
    assert "as of" not in screen.getvalue()  # nothing read, no time
    before = time.strftime("%H:%M:%S")
    live.update([{**row, "memory": 150 * MIB, "cpu_seconds": 2.5}])
    after = time.strftime("%H:%M:%S")
    (title,) = re.findall(r"tree  \(memory/cpu as of (\d\d:\d\d:\d\d)\)", screen.getvalue())
    assert title in {before, after}  # read at this update


def test_group_usage_counts_the_whole_group_and_only_it() -> None:
    # Each says so once it runs (exec'd, its size settled): one stays in the
    # group, one leaves it (setsid).
    python = f"{sys.executable} -c 'import time; print(flush=True); time.sleep(100)'"
    script = f"{python} & setsid {python} & wait"
    with subprocess.Popen(
        ["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True
    ) as shell:
        try:
            assert shell.stdout is not None
            shell.stdout.readline()  # both run
            shell.stdout.readline()
            page = resource.getpagesize()

            def rss(pid: int) -> int:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                return int(fields[21]) * page

            kids = [int(p) for p in Path(f"/proc/{shell.pid}/task/{shell.pid}/children")
                    .read_text().split()]  # fmt: skip
            assert len(kids) == 2
            usage = group_usage(shell.pid)
            assert usage is not None
            own = rss(shell.pid)
            alone = [k for k in kids if os.getpgid(k) != shell.pid]  # the setsid one
            in_group = [k for k in kids if k not in alone]
            # The leader and its group's sleep; not the one that left (exec may
            # change a size in between: within a page or two per process).
            expected = own + sum(rss(k) for k in in_group)
            assert abs(usage[0] - expected) <= 64 * page
            assert usage[0] > own + 4 * 2**20  # a Python's worth
            assert usage[1] >= 0
        finally:
            os.killpg(shell.pid, signal.SIGKILL)
            for kid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)
    assert group_usage(shell.pid) is None  # gone


def _drained(events):  # type: ignore[no-untyped-def]
    while True:
        try:
            yield events.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return


# -- tree files ------------------------------------------------------------------------


def _tree(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tree.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_tree_files_take_limits_and_max_memory(tmp_path: Path) -> None:
    path = _tree(
        tmp_path,
        """\
        [supervisor]
        strategy = "one_for_one"

        [[child]]
        name = "env"
        target = "os:getpid"
        max_memory = "1GiB"

        [child.limits]
        memory = "2GiB"
        open_files = 4096
        cpu_seconds = 3600
        core_dumps = false
        """,
    )
    (spec,) = load_tree(path, add_to_path=False).children
    assert isinstance(spec, ChildSpec)
    assert spec.max_memory == 2**30
    assert spec.limits == {
        "memory": 2 * 2**30,
        "open_files": 4096,
        "cpu_seconds": 3600,
        "core_dumps": False,
    }


@pytest.mark.parametrize(
    ("lines", "key", "line", "message"),
    [
        ('max_memory = "lots"', "child[0].max_memory", 4, "expected a size"),
        ('[child.limits]\nmemory = "1.5Q"', "child[0].limits.memory", 5, "expected a size"),
        ("[child.limits]\nfiles = 10", "child[0].limits.files", 5, "unknown limit 'files'"),
        ("[child.limits]\ncore_dumps = 0", "child[0].limits.core_dumps", 5, "True or False"),
    ],
)
def test_check_names_the_bad_limit_and_its_line(
    tmp_path: Path, lines: str, key: str, line: int, message: str
) -> None:
    path = _tree(tmp_path, '[[child]]\nname = "env"\ntarget = "os:getpid"\n' + lines + "\n")
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, add_to_path=False)
    assert caught.value.key == key
    assert caught.value.line == line
    assert message in str(caught.value)


# -- on a Ray node: the host actor's process layer samples -----------------------------
# (``host``: conftest's Ray host actor class, no Ray, on a shared fork server of ours)


def _grower_over_100_mib() -> Launch:
    """A launch as the Ray host gets it: 150 MiB resident under a max_memory of 100 MiB."""
    return Launch(
        "grower",
        f"{T}:hold_resident",
        (150 * MIB,),
        {},
        {},
        None,
        0,
        max_memory=100 * MIB,
        shutdown=2,
    )


async def test_a_ray_hosted_child_is_sampled_on_its_node_and_its_limits_set(
    host: ChildHost,
) -> None:
    over = _grower_over_100_mib()
    seer = Launch("seer", f"{T}:limits_seen", (), {}, {}, None, 0, limits={"open_files": 77})
    with anyio.fail_after(30):
        stopped = await host.run(0, over, None, False)
        seen = await host.run(1, seer, None, False)
    status = _status_from_payload(stopped)
    assert status.signum == signal.SIGTERM
    assert not status.normal
    assert isinstance(status.over_limit, ChildOverLimitError)
    assert status.over_limit.limit_bytes == 100 * MIB
    assert "over its max_memory of 100 MiB" in status.describe()
    assert tuple(seen["result"]["nofile"]) == (77, 77)


# -- what a stop over a limit shows, and how it is bounded -----------------------------


async def test_a_child_being_stopped_over_max_memory_is_shown_stopping() -> None:
    spec = ChildSpec(
        "grower",
        f"{T}:hold_resident_ignoring_sigterm",
        args=(150 * MIB,),
        max_memory="100MiB",
        shutdown=2,
        restart="temporary",
    )
    async with Supervisor([spec]) as sup:
        with sup.events() as events, anyio.fail_after(30):
            stopping = await wait_for(sup, "stopping", child="grower", events=events)
            # It ignores its SIGTERM: it is still being stopped, for its grace.
            assert sup.child_info("grower").state == "stopping"
            assert [info.state for info in sup.walk()] == ["stopping"]
            exited = await wait_for(sup, "exited", child="grower", events=events)
    assert stopping.pid == exited.pid
    assert stopping.detail is not None
    measured = re.fullmatch(
        r"over max_memory \(measured (.+ MiB) of limit 100 MiB\)", stopping.detail
    )
    assert measured is not None, stopping.detail
    assert parse_size(measured[1].replace(" ", "")) > 150 * MIB
    assert exited.signum == signal.SIGKILL  # after its grace of 2 s


async def test_an_over_limit_stop_is_bounded_when_shutdown_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sampler, "OVER_LIMIT_GRACE", 0.5)
    spec = ChildSpec(
        "grower",
        f"{T}:hold_resident_ignoring_sigterm",
        args=(150 * MIB,),
        max_memory="100MiB",
        shutdown=None,  # an ordinary stop may take as long as it needs; this one may not
        restart="temporary",
    )
    async with Supervisor([spec]) as sup:
        with sup.events() as events, anyio.fail_after(30):
            exited = await wait_for(sup, "exited", child="grower", events=events)
    assert exited.signum == signal.SIGKILL
    assert exited.detail is not None
    assert "over its max_memory of 100 MiB" in exited.detail


async def test_a_thread_refused_under_limits_memory_names_the_limit() -> None:
    spec = ChildSpec(
        "threads",
        f"{T}:start_a_thread_with_a_large_stack",
        args=(512 * MIB,),  # its stack alone is over the limit
        limits={"memory": "200MiB"},
        restart="temporary",
        significant=True,
    )
    with pytest.raises(PrematureTaskDeathError) as caught:
        async with Supervisor([spec]) as sup:
            await sup.wait()
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert (
        "raised RuntimeError: can't start new thread (it ran under limits.memory = 200 MiB; "
        "RLIMIT_DATA: thread stacks and malloc arenas count)"
    ) in str(caught.value)


async def test_a_thread_refused_without_a_memory_limit_is_left_as_it_was() -> None:
    spec = ChildSpec(
        "threads",
        f"{T}:start_a_thread_with_a_large_stack",
        args=(512 * MIB,),
        limits={"open_files": 256},
        restart="temporary",
    )
    async with Supervisor([spec]) as sup:
        # Without a memory limit the stack is only reserved: the thread starts.
        assert (await sup.wait())["threads"] == "started"


def test_a_signal_cause_is_told_and_crosses_from_a_ray_host() -> None:
    status = ExitStatus(None, signal.SIGXCPU, signal_cause="over limits.cpu_seconds of 1 s")
    assert status.describe() == "killed by SIGXCPU (over limits.cpu_seconds of 1 s)"
    assert ExitStatus(None, signal.SIGXCPU).describe() == "killed by SIGXCPU"
    back = _status_from_payload(_status_payload(status, False))
    assert back.describe() == "killed by SIGXCPU (over limits.cpu_seconds of 1 s)"


async def test_a_child_killed_at_the_hard_cpu_limit_is_told_so() -> None:
    spec = ChildSpec(
        "spinner",
        f"{T}:spin_ignoring_sigxcpu",
        limits={"cpu_seconds": 1, "core_dumps": False},
        restart="temporary",
        significant=True,
    )
    # Spawned: its zombie is ours to reap, so its CPU time is read without a
    # race (a fork server may reap it first: then the SIGKILL is not named).
    with pytest.raises(PrematureTaskDeathError) as caught, anyio.fail_after(60):
        async with Supervisor([spec], start_method="spawn") as sup:
            await sup.wait()
    assert caught.value.signum == signal.SIGKILL  # 5 s of CPU after its SIGXCPU
    told = str(caught.value)
    assert "killed by SIGKILL (over limits.cpu_seconds of 1 s, and its hard limit of 6 s)" in told


async def test_a_sigkill_of_ours_is_not_put_down_to_cpu_seconds() -> None:
    spec = ChildSpec(
        "sleeper", f"{T}:hold_resident", args=(MIB,), limits={"cpu_seconds": 30}, shutdown=0
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_ready("sleeper")
    # Stopped with shutdown=0: SIGKILL at once, ours, with 30 s of CPU left to it.
    last = sup.child_info("sleeper").last_exit
    assert last is not None
    assert last.signum == signal.SIGKILL
    assert last.describe() == "killed by SIGKILL"


class _Collecting(logging.Handler):
    """Stands in for the relay's LogClientHandler: keeps what would go to the log server."""

    made: ClassVar[list[_Collecting]] = []
    idle = True

    def __init__(self, config: object, on_connect: object, **options: object) -> None:
        super().__init__()
        self.options = options
        self.records: list[logging.LogRecord] = []
        _Collecting.made.append(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_ray_hosts_warning_about_its_child_is_relayed_with_its_output(
    host: ChildHost, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(logclient, "LogClientHandler", _Collecting)
    monkeypatch.setattr(_Collecting, "made", [])
    over = _grower_over_100_mib()
    with anyio.fail_after(30):
        await host.run(0, over, {"address": "the supervisor's log server"}, True)
    (relay,) = _Collecting.made
    assert relay.options == {"errors_sent_at_once": False}  # it emits from the actor's loop
    said = [r.getMessage() for r in relay.records if r.name == "gymnasiarch.process"]
    assert any("over its max_memory of 100 MiB: stopping it" in line for line in said), said
    # Not (also) into the Ray worker's own log, which the driver prints as coloured stdout.
    assert [r for r in caplog.records if r.name == "gymnasiarch.process"] == []
    # The run over, the host's loggers are as they were.
    for name in HOST_LOGGERS:
        assert logging.getLogger(name).propagate
        assert relay not in logging.getLogger(name).handlers


_SLOW_TO_STOP = textwrap.dedent(
    """
    import os, signal, socket, time
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.connect(os.environ["NOTIFY_SOCKET"])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    notify.send(b"READY=1")
    hog = bytearray(120 * 2**20)
    for page in range(0, len(hog), 4096):
        hog[page] = 1  # resident
    while not stop:
        notify.send(b"WATCHDOG=1")
        time.sleep(0.05)
    time.sleep(1.0)  # an orderly shutdown (flushing its data): no beats meanwhile
    print("clean exit", flush=True)
    """
)


async def test_a_child_stopped_over_max_memory_is_not_then_found_hung() -> None:
    """Its stop takes longer than its watchdog: it is left to its grace, and over its limit."""
    spec = ChildSpec(
        "prog",
        command=[sys.executable, "-c", _SLOW_TO_STOP],
        ready=Notify(),
        restart="transient",
        watchdog=0.3,
        max_memory="60MiB",
        shutdown=5.0,
    )
    with anyio.fail_after(30), pytest.raises(PrematureTaskDeathError) as caught:
        async with Supervisor([spec], max_restarts=0) as supervisor:
            await supervisor.wait()
    error = caught.value
    assert isinstance(error.__cause__, ChildOverLimitError), repr(error.__cause__)
    assert error.exitcode == 0  # its own orderly end, not the watchdog's SIGKILL
