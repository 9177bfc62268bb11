"""The servers' accept loop: capacity errors are waited out, every other error ends it.

The log server and the control socket accept through
:func:`gymnasiarch._wire.serving.accept_forever`. As trio's ``serve_listeners``,
it retries an accept that failed for want of a resource (EMFILE, ENFILE,
ENOMEM, ENOBUFS) after a pause that grows, bounded, and raises any other
error instead of retrying it for ever.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from gymnasiarch._wire import serving

BACKENDS = ["asyncio", "trio"]


class _Failing:
    """A real listener whose next accepts fail with *errors* first."""

    def __init__(self, real: Any, errors: list[BaseException]) -> None:
        self.real = real
        self.errors = errors
        self.calls = 0

    async def accept(self) -> SocketStream:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        stream: SocketStream = await self.real.accept()
        return stream


def _broken(code: int) -> BaseException:
    """An accept error as anyio's trio backend raises it: the OSError is the cause."""
    error = anyio.BrokenResourceError()
    error.__cause__ = OSError(code, os.strerror(code))
    return error


class _Pauses(logging.Handler):
    """Collects the accept loop's warnings (and calls *on_warning* with each)."""

    def __init__(self, on_warning: Any = None) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.on_warning = on_warning

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.on_warning is not None:
            self.on_warning()


@pytest.fixture
def pauses() -> Iterator[_Pauses]:
    handler = _Pauses()
    logger = logging.getLogger("gymnasiarch.channel")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def _serve_one(path: Path, listener: Any, *, connections: int = 1) -> None:
    """Run the accept loop on *listener* until *connections* clients were handed over."""
    handed: list[SocketStream] = []
    enough = anyio.Event()

    async def handle(stream: SocketStream) -> None:
        handed.append(stream)
        await stream.aclose()
        if len(handed) == connections:
            enough.set()

    clients = [await anyio.connect_unix(path) for _ in range(connections)]
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(serving.accept_forever, listener, handle, group, "test")
            with anyio.fail_after(10):
                await enough.wait()
            group.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()


def _run(backend: str, main: Any, *args: Any) -> None:
    anyio.run(main, *args, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_emfile_is_waited_out(backend: str, tmp_path: Path, pauses: _Pauses) -> None:
    """Out of descriptors while a client waits: the loop pauses, then accepts it."""
    path = tmp_path / "s.sock"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Given back at the first warning: only the accept in between runs short.
    pauses.on_warning = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    async def main() -> None:
        async with await anyio.create_unix_listener(path) as listener:
            handed = anyio.Event()

            async def handle(stream: SocketStream) -> None:
                await stream.aclose()
                handed.set()

            async with await anyio.connect_unix(path), anyio.create_task_group() as group:
                lowest_free = os.dup(0)
                os.close(lowest_free)
                # The next descriptor this process makes is one too many.
                resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
                group.start_soon(serving.accept_forever, listener, handle, group, "test")
                with anyio.fail_after(10):
                    await handed.wait()
                group.cancel_scope.cancel()

    try:
        _run(backend, main)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(pauses.messages) == 1
    assert "Too many open files" in pauses.messages[0]


CAPACITY = [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS]


@pytest.mark.parametrize("shape", ["OSError", "BrokenResourceError"])
@pytest.mark.parametrize("code", CAPACITY, ids=[errno.errorcode[c] for c in CAPACITY])
def test_capacity_errors_are_retried(code: int, shape: str, tmp_path: Path) -> None:
    """Each capacity error, raw (asyncio) or wrapped (trio), is retried; the client gets in."""
    path = tmp_path / "s.sock"
    error = OSError(code, os.strerror(code)) if shape == "OSError" else _broken(code)

    async def main() -> None:
        async with await anyio.create_unix_listener(path) as real:
            failing = _Failing(real, [error])
            await _serve_one(path, failing)
            assert failing.errors == []  # the error was met, and the client got in after it

    _run("asyncio", main)


OTHERS = [
    OSError(errno.EBADF, "Bad file descriptor"),
    OSError(errno.EINVAL, "Invalid argument"),
    _broken(errno.ENOTSOCK),
    anyio.BrokenResourceError(),
    anyio.ClosedResourceError(),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "error", OTHERS, ids=["EBADF", "EINVAL", "wrapped-ENOTSOCK", "broken", "closed"]
)
def test_any_other_accept_error_ends_the_loop(
    error: BaseException, backend: str, tmp_path: Path, pauses: _Pauses
) -> None:
    """Not a capacity error: raised at once, not retried for ever (nor warned about)."""
    path = tmp_path / "s.sock"

    async def main() -> None:
        async with await anyio.create_unix_listener(path) as real:
            failing = _Failing(real, [error])

            async def handle(stream: SocketStream) -> None:
                await stream.aclose()  # pragma: no cover - nothing gets in

            with anyio.fail_after(5):
                async with anyio.create_task_group() as group:
                    await serving.accept_forever(failing, handle, group, "test")

    with pytest.raises(ExceptionGroup) as info:
        _run(backend, main)
    # The very error, through the task groups.
    assert info.value.subgroup(lambda e: e is error) is not None
    assert pauses.messages == []


def test_the_pause_grows_is_bounded_and_starts_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pauses: _Pauses
) -> None:
    """Errors in a row double the pause up to its bound; an accept that works resets it."""
    monkeypatch.setattr(serving, "_ACCEPT_PAUSE", 0.01)
    monkeypatch.setattr(serving, "_ACCEPT_PAUSE_MAX", 0.04)
    path = tmp_path / "s.sock"
    emfile = [OSError(errno.EMFILE, "Too many open files") for _ in range(6)]

    async def main() -> None:
        async with await anyio.create_unix_listener(path) as real:
            # Five failures, a connection, one failure, a connection.
            failing = _Failing(real, emfile[:5])
            handed = 0
            second = anyio.Event()

            async def handle(stream: SocketStream) -> None:
                nonlocal handed
                handed += 1
                await stream.aclose()
                if handed == 1:
                    failing.errors.append(emfile[5])
                else:
                    second.set()

            async with (
                await anyio.connect_unix(path),
                await anyio.connect_unix(path),
                anyio.create_task_group() as group,
            ):
                group.start_soon(serving.accept_forever, failing, handle, group, "test")
                with anyio.fail_after(10):
                    await second.wait()
                group.cancel_scope.cancel()

    _run("asyncio", main)
    waits = [message.rsplit("trying again in ", 1)[1] for message in pauses.messages]
    assert waits == ["0.01 s", "0.02 s", "0.04 s", "0.04 s", "0.04 s", "0.01 s"]


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPROTO, errno.EPERM])
def test_a_connection_gone_before_its_accept_is_skipped(
    code: int, tmp_path: Path, pauses: _Pauses
) -> None:
    """The peer hung up while it queued: the next one is accepted at once, no warning."""
    path = tmp_path / "s.sock"

    async def main() -> None:
        async with await anyio.create_unix_listener(path) as real:
            failing = _Failing(real, [OSError(code, os.strerror(code))])
            await _serve_one(path, failing)
            assert failing.errors == []  # the error was met, and the client got in after it

    _run("asyncio", main)
    assert pauses.messages == []
