"""The log pipeline with real processes and sockets: none lost, none forged, abuse shrugged off."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import socket
import stat
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._wire import frames as wire
from gymnasiarch.exceptions import InitializationFailedError, PrematureTaskDeathError
from gymnasiarch.logserver import LogClientHandler, LogServer, LogTicket
from targets import logs

L = "targets.logs"
_MSGPACK_MAPS = {*range(0x80, 0x90), 0xDE, 0xDF}


class Collector(logging.Handler):
    """Keeps every record the root logger handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, name: str | None = None, child: str | None = None) -> list[str]:
        return [
            r.getMessage()
            for r in self.records
            if (name is None or r.name == name)
            and (child is None or getattr(r, "child", None) == child)
        ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    root = logging.getLogger()
    handler = Collector()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


# -- none lost --------------------------------------------------------------------


async def test_every_record_arrives_in_order_whatever_the_ending(collector: Collector) -> None:
    """4 children x 2,000 records, ending by return, raise, sys.exit(3): nothing lost."""
    count = 2000
    endings = {"returns": "return", "raises": "raise", "exits": "exit", "returns2": "return"}
    sup = Supervisor(
        [
            ChildSpec(name, f"{L}:burst", args=(count, ending), restart="temporary")
            for name, ending in endings.items()
        ],
        start_order="parallel",
    )
    with sup.events() as events, anyio.fail_after(30):
        async with sup:
            await sup.wait()
        exits = {e.child: e for e in [e async for e in events] if e.kind == "exited"}
    expected = [f"record {i}" for i in range(count)]
    for name in endings:
        assert collector.messages("targets.logs", child=name) == expected, name
    assert exits["exits"].exitcode == 3


async def test_exit_is_reported_only_after_the_last_record(collector: Collector) -> None:
    """When 'exited' is published, the child's last record has been handled."""
    sup = Supervisor([ChildSpec("last", f"{L}:burst", args=(500, "exit"), restart="temporary")])
    seen_at_exit: list[int] = []
    with sup.events() as events, anyio.fail_after(20):
        async with sup:
            async for event in events:
                if event.kind == "exited":
                    seen_at_exit.append(len(collector.messages("targets.logs")))
                    break
    assert seen_at_exit == [500]


async def test_records_carry_exceptions_extras_and_the_true_child(collector: Collector) -> None:
    """exc_text, plain and repr'd extras travel; child and gymnasiarch.* names are not forgeable."""
    with anyio.fail_after(20):
        await Supervisor([ChildSpec("rich", f"{L}:rich_records", restart="temporary")]).run()
    by_message = {r.getMessage(): r for r in collector.records}
    failed = by_message["it failed"]
    assert "ValueError: inner" in (failed.exc_text or "")
    assert failed.levelno == logging.ERROR
    assert failed.child == "rich"
    extras = by_message["with extras"]
    assert extras.plain == 7  # type: ignore[attr-defined]
    assert extras.thing.startswith("<object object")  # type: ignore[attr-defined]
    assert extras.child == "rich"  # type: ignore[attr-defined]
    assert extras.process != os.getpid()
    forged = by_message["forged supervisor line"]
    assert forged.name == "gymnasiarch.child.rich"
    assert forged.child == "rich"  # type: ignore[attr-defined]


async def test_hand_made_records_do_not_cost_the_connection(collector: Collector) -> None:
    """A record with None where the stdlib allows it travels, and so does the next one."""
    with anyio.fail_after(20):
        await Supervisor([ChildSpec("odd", f"{L}:odd_records", restart="temporary")]).run()
    assert collector.messages("targets.logs", child="odd") == ["hand-made", "after the odd one"]


async def test_structlog_events_and_context_travel(collector: Collector) -> None:
    """A child's structlog event, bound fields and context variables arrive as fields."""
    with anyio.fail_after(20):
        await Supervisor([ChildSpec("s", f"{L}:structlog_events", restart="temporary")]).run()
    (record,) = [r for r in collector.records if r.name == "targets.structured"]
    assert record.getMessage() == "stepped"
    assert (record.agent, record.reward, record.episode) == ("a1", 0.5, 3)  # type: ignore[attr-defined]
    assert record.child == "s"  # type: ignore[attr-defined]


# -- stdout and stderr --------------------------------------------------------------


async def test_printed_lines_become_records_and_stderr_travels_with_the_error(
    collector: Collector,
) -> None:
    """print() and stderr lines are records of gymnasiarch.child.<name>; stderr joins the error."""
    sup = Supervisor(
        [ChildSpec("talker", f"{L}:print_and_crash", restart="transient")], max_restarts=0
    )
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError) as caught:
        await sup.run()
    lines = {r.getMessage(): r for r in collector.records if r.name == "gymnasiarch.child.talker"}
    assert lines["hello from stdout"].levelno == logging.INFO
    assert lines["hello from stdout"].stream == "stdout"  # type: ignore[attr-defined]
    assert lines["partial line without newline"].levelno == logging.INFO
    assert lines["warning: about to fail"].levelno == logging.WARNING
    assert caught.value.output == "warning: about to fail"


async def test_a_child_that_dies_before_logging_is_heard(collector: Collector) -> None:
    """Only fd 2 and os._exit: the start failure still says what the child said last."""
    with anyio.fail_after(20), pytest.raises(InitializationFailedError) as caught:
        await Supervisor([ChildSpec("mute", logs.die_at_birth, ready_timeout=10)]).run()
    assert caught.value.output == "fatal: cannot even start"
    assert "fatal: cannot even start" in str(caught.value)
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError) as crashed:
        await Supervisor([ChildSpec("mute", logs.die_at_birth)], max_restarts=0).run()
    assert crashed.value.output == "fatal: cannot even start"
    assert crashed.value.exitcode == 7


async def test_inherited_output_is_not_captured(
    collector: Collector, capfd: pytest.CaptureFixture[str]
) -> None:
    """output="inherit": the child writes to our own stdout."""
    with anyio.fail_after(20), pytest.raises(PrematureTaskDeathError):
        await Supervisor(
            [ChildSpec("loud", f"{L}:print_and_crash", restart="transient", output="inherit")],
            max_restarts=0,
        ).run()
    assert "hello from stdout" in capfd.readouterr().out
    assert not [r for r in collector.records if r.name == "gymnasiarch.child.loud"]


# -- the seed's form: LogServer(host, port) ---------------------------------------


async def run_seed_form_child(ticket: LogTicket, count: int) -> None:
    """A bare process running spawn_wrapper with *ticket*'s config: *count* records, then exit."""
    config = ticket.client_config(logging.INFO)
    process = multiprocessing.get_context("forkserver").Process(
        target=logs.send_log_config, args=(config, ticket.name, count)
    )
    process.start()
    try:
        with anyio.fail_after(20):
            await ticket.finished.wait()
            await anyio.wait_readable(process.sentinel)
    finally:
        process.join()
        process.close()


async def test_seed_form_tcp_server_with_a_spawn_wrapper_child(collector: Collector) -> None:
    """LogServer("127.0.0.1", 0) and a child running spawn_wrapper: end to end."""
    async with LogServer("127.0.0.1", 0) as server:
        assert server.listen_port > 0
        await run_seed_form_child(server.admit("worker"), 300)
    assert collector.messages("targets.logs", child="worker") == [f"record {i}" for i in range(300)]


@pytest.mark.parametrize("msgpack", [True, False], ids=["msgpack", "json"])
async def test_records_travel_as_msgpack_where_the_server_reads_it_else_as_json(
    collector: Collector, monkeypatch: pytest.MonkeyPatch, msgpack: bool
) -> None:
    """The client packs records with msgpack only if its config says the server reads it."""
    first_bytes: list[bytes] = []
    decode = wire.decode

    def spying_decode(payload: bytes) -> dict[str, Any]:
        first_bytes.append(payload[:1])
        return decode(payload)

    monkeypatch.setattr(wire, "decode", spying_decode)
    async with LogServer.unix() as server:
        server._reads_msgpack = msgpack
        ticket = server.admit("either")
        assert ticket.client_config()["msgpack"] is msgpack
        await run_seed_form_child(ticket, 300)
    assert collector.messages("targets.logs", child="either") == [f"record {i}" for i in range(300)]
    # The hello is JSON either way; every frame after it is records (then the goodbye).
    records_frames = first_bytes[1:-1]
    assert records_frames
    assert {byte[0] in _MSGPACK_MAPS for byte in records_frames} == {msgpack}


async def test_frames_are_cut_exactly_however_they_arrive(collector: Collector) -> None:
    """Three frames in one send, then one in pieces: every record, in order."""
    frames = [
        wire.encode({"t": "records", "r": [{"name": "cut", "levelno": logging.INFO, "msg": m}]})
        for m in ("one", "two", "three", "four")
    ]
    async with unix_server() as server:
        stream, nonce = await connect(server)
        async with stream:
            ticket = await hello(server, stream, nonce)
            await stream.send(b"".join(frames[:3]))
            last = frames[3]
            for piece in (last[:2], last[2:7], last[7:]):
                await stream.send(piece)
                await anyio.sleep(0.01)  # let the server read each piece on its own
            await stream.send(wire.encode({"t": "bye"}))
            with anyio.fail_after(10):
                await ticket.finished.wait()
    assert collector.messages("cut") == ["one", "two", "three", "four"]


def _modes(path: Path) -> tuple[int, int]:
    return stat.S_IMODE(path.parent.stat().st_mode), stat.S_IMODE(path.stat().st_mode)


async def test_unix_server_lives_in_a_private_directory_removed_on_stop() -> None:
    server = LogServer.unix()
    path = Path(str(server.client_address))
    async with server:
        directory_mode, socket_mode = _modes(path)
        assert directory_mode == 0o700
        assert socket_mode & 0o077 == 0
    assert not os.path.exists(path.parent)  # noqa: ASYNC240 - a quick check, no I/O wait


# -- abuse --------------------------------------------------------------------------


@asynccontextmanager
async def unix_server(**options: float) -> AsyncIterator[LogServer]:
    async with LogServer.unix(**options) as server:
        yield server


async def connect(server: LogServer) -> tuple[SocketStream, str]:
    """A raw connection that has read its challenge."""
    stream = await anyio.connect_unix(str(server.client_address))
    received = BufferedByteReceiveStream(stream)
    (length,) = struct.unpack(">I", await received.receive_exactly(4))
    challenge = wire.decode(await received.receive_exactly(length))
    return stream, challenge["nonce"]


async def send_good_records(server: LogServer, name: str, messages: list[str]) -> LogTicket:
    """A well-behaved client: handshake, records, goodbye; returns once the server is done."""
    ticket = server.admit(name)
    stream, nonce = await connect(server)
    key = bytes.fromhex(ticket.client_config()["key"])
    async with stream:
        await stream.send(
            wire.encode({"t": "hello", "ticket": ticket.id, "mac": wire.answer(key, nonce)})
        )
        records = [{"name": "good", "levelno": logging.INFO, "msg": m} for m in messages]
        await stream.send(wire.encode({"t": "records", "r": records}))
        await stream.send(wire.encode({"t": "bye"}))
    with anyio.fail_after(10):
        await ticket.finished.wait()
    return ticket


async def hello(server: LogServer, stream: SocketStream, nonce: str, name: str = "c") -> LogTicket:
    ticket = server.admit(name)
    key = bytes.fromhex(ticket.client_config()["key"])
    await stream.send(
        wire.encode({"t": "hello", "ticket": ticket.id, "mac": wire.answer(key, nonce)})
    )
    return ticket


async def send_after_hello(server: LogServer, data: bytes) -> None:
    """Authenticate, send *data*, hang up; the server must close the connection."""
    stream, nonce = await connect(server)
    async with stream:
        await hello(server, stream, nonce)
        await stream.send(data)
        await stream.send_eof()
        assert await closed_by_server(stream)


@contextmanager
def warnings_of_the_server() -> Iterator[list[str]]:
    """The server's own warnings, one per closed connection."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    server_logger = logging.getLogger("gymnasiarch.logserver")
    handler = Keep(logging.WARNING)
    server_logger.addHandler(handler)
    try:
        yield seen
    finally:
        server_logger.removeHandler(handler)


async def closed_by_server(stream: SocketStream) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    with anyio.fail_after(10):
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return True
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(min_size=1, max_size=300))
def test_garbage_closes_that_connection_only(garbage: bytes) -> None:
    """Any bytes at all instead of a hello: one warning, the server serves the next client."""

    async def scenario() -> None:
        logging.getLogger("good").setLevel(logging.INFO)
        with warnings_of_the_server() as warnings:
            async with unix_server(handshake_timeout=0.5, frame_timeout=0.5) as server:
                stream, _ = await connect(server)
                async with stream:
                    await stream.send(garbage)
                    await stream.send_eof()
                    assert await closed_by_server(stream)
                ticket = await send_good_records(server, "after", ["still served"])
                assert ticket.connected
        assert len(warnings) == 1, warnings

    anyio.run(scenario)


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (struct.pack(">I", 0xFFFFFFFF), "cap"),  # a 4 GiB length prefix
        (struct.pack(">I", 100) + b"{" * 10, "inside a frame"),  # truncated
        (struct.pack(">I", 2) + b"[]", "type 't'"),
        (struct.pack(">I", 4) + b"\xff\xfe\x00\x01", "not JSON"),
        (struct.pack(">I", 2) + b"\x81\xc1", "not msgpack"),  # a map, then a byte never used
    ],
)
async def test_bad_frames_close_the_connection_with_one_warning(
    frame: bytes, complaint: str
) -> None:
    with warnings_of_the_server() as warnings:
        async with unix_server() as server:
            await send_after_hello(server, frame)
            await send_good_records(server, "after", ["fine"])
    assert len(warnings) == 1, warnings
    assert complaint in warnings[0]


async def test_wrong_field_types_close_that_connection(collector: Collector) -> None:
    """levelno="20" would make Logger.handle raise: the server refuses the frame."""
    with warnings_of_the_server() as warnings:
        async with unix_server() as server:
            stream, nonce = await connect(server)
            async with stream:
                await hello(server, stream, nonce)
                bad = {"name": "good", "levelno": "20", "msg": "never handled"}
                await stream.send(wire.encode({"t": "records", "r": [bad]}))
                assert await closed_by_server(stream)
            await send_good_records(server, "after", ["handled"])
    assert "levelno" in warnings[0]
    assert collector.messages("good") == ["handled"]


async def test_a_gap_in_the_sequence_is_reported_and_a_step_back_refused(
    collector: Collector,
) -> None:
    """Sequence numbers: records missing on the way are counted; a frame that goes back closes."""

    def frame(first: int, *messages: str) -> bytes:
        records = [{"name": "seq", "levelno": logging.INFO, "msg": m} for m in messages]
        return wire.encode({"t": "records", "s": first, "r": records})

    with warnings_of_the_server() as warnings:
        async with unix_server() as server:
            stream, nonce = await connect(server)
            async with stream:
                ticket = await hello(server, stream, nonce, name="lossy")
                await stream.send(frame(0, "a", "b"))
                await stream.send(frame(5, "f"))  # c, d, e never came
                await stream.send(frame(3, "d"))  # back in time: refused
                assert await closed_by_server(stream)
            with anyio.fail_after(10):
                await ticket.finished.wait()
    assert collector.messages("seq") == ["a", "b", "f"]
    assert len(warnings) == 2
    assert warnings[0] == "3 records of child 'lossy' were lost on the way"
    assert "out of order" in warnings[1]


async def test_pickle_payload_is_never_unpickled(tmp_path: Path) -> None:
    """A pickle that would create a file if loaded: sent raw and inside a frame, nothing runs."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit())
    with warnings_of_the_server() as warnings:
        async with unix_server() as server:
            for frame in (struct.pack(">I", len(payload)) + payload, payload):
                await send_after_hello(server, frame)
    assert not marker.exists()
    assert len(warnings) == 2


async def test_clients_without_the_secret_are_refused(collector: Collector) -> None:
    """A wrong MAC, an unknown ticket, a reused ticket: closed before any record counts."""
    with warnings_of_the_server() as warnings:
        async with unix_server() as server:
            ticket = server.admit("victim")
            attempts = [
                {"t": "hello", "ticket": ticket.id, "mac": "00" * 32},
                {"t": "hello", "ticket": "made-up", "mac": wire.answer(b"guess", "x")},
                {"t": "records", "r": [{"name": "good", "levelno": 20, "msg": "sneaky"}]},
            ]
            for attempt in attempts:
                stream, _ = await connect(server)
                async with stream:
                    await stream.send(wire.encode(attempt))
                    await stream.send(
                        wire.encode(
                            {
                                "t": "records",
                                "r": [{"name": "good", "levelno": 20, "msg": "sneaky"}],
                            }
                        )
                    )
                    assert await closed_by_server(stream)
            used = await send_good_records(server, "once", ["first"])
            stream, nonce = await connect(server)
            async with stream:
                key = bytes.fromhex(used.client_config()["key"])
                await stream.send(
                    wire.encode({"t": "hello", "ticket": used.id, "mac": wire.answer(key, nonce)})
                )
                assert await closed_by_server(stream)
    assert collector.messages("good") == ["first"]
    assert len(warnings) == 4, warnings


async def test_stalled_clients_are_closed_and_idle_crowds_do_not_block_others(
    collector: Collector,
) -> None:
    """200 silent connections, one stuck mid-frame: each is closed; a good client is served."""
    with warnings_of_the_server() as warnings:
        async with unix_server(handshake_timeout=1.0, frame_timeout=0.3) as server:
            idle = [(await connect(server))[0] for _ in range(200)]
            dripping, nonce = await connect(server)
            await hello(server, dripping, nonce)
            await dripping.send(struct.pack(">I", 50) + b'{"t":')  # and nothing more
            await send_good_records(server, "busy", ["served amid the crowd"])
            assert collector.messages("good") == ["served amid the crowd"]
            for stream in [*idle, dripping]:
                assert await closed_by_server(stream)
                await stream.aclose()
    assert sum("stalled" in w for w in warnings) == 201


async def test_a_raising_filter_in_the_parent_costs_its_record_only(
    collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parent's own logging misbehaves on one record: that record is lost, no more."""

    def picky(record: logging.LogRecord) -> bool:
        if record.getMessage() == "explode":
            raise RuntimeError("a filter with a bug")
        return True

    good = logging.getLogger("good")
    good.addFilter(picky)
    try:
        async with unix_server() as server:
            await send_good_records(server, "unlucky", ["explode", "next"])
            await send_good_records(server, "after", ["still served"])
    finally:
        good.removeFilter(picky)
    assert collector.messages("good") == ["next", "still served"]
    told = capsys.readouterr().err
    assert "raised on a record of child 'unlucky' (logger 'good', INFO)" in told
    assert "RuntimeError: a filter with a bug" in told


async def test_a_long_tmpdir_still_gives_a_usable_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TMPDIR too deep for a Unix socket path: the server picks /tmp instead."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(deep))
    async with LogServer.unix() as server:
        assert len(str(server.client_address)) < 108
        await send_good_records(server, "short", ["fine"])


async def test_records_in_row_form_are_checked_like_objects(collector: Collector) -> None:
    """The compact row form: a good row is handled; a short row or a bad type closes."""
    good = ["good", logging.INFO, "a row", 1.0, None, 3, None, None, None, None, None]
    good += [None, None, {"plain": 1}]
    with warnings_of_the_server() as warnings:
        async with unix_server() as server:
            for bad in (good[:5], [*good[:1], "20", *good[2:]]):
                await send_after_hello(server, wire.encode({"t": "records", "r": [bad]}))
            ticket = server.admit("rowdy")
            stream, nonce = await connect(server)
            key = bytes.fromhex(ticket.client_config()["key"])
            async with stream:
                mac = wire.answer(key, nonce)
                await stream.send(wire.encode({"t": "hello", "ticket": ticket.id, "mac": mac}))
                await stream.send(wire.encode({"t": "records", "r": [good]}))
                await stream.send(wire.encode({"t": "bye"}))
            with anyio.fail_after(10):
                await ticket.finished.wait()
    assert collector.messages("good") == ["a row"]
    (record,) = [r for r in collector.records if r.name == "good"]
    assert record.plain == 1  # type: ignore[attr-defined]
    assert record.child == "rowdy"  # type: ignore[attr-defined]
    assert "row has 5 fields" in warnings[0]
    assert "'levelno'" in warnings[1]


async def test_a_line_without_end_is_cut_into_bounded_records(collector: Collector) -> None:
    """8 MiB without a newline: records of at most 64 KiB, all of it, quickly."""
    with anyio.fail_after(20):
        await Supervisor(
            [ChildSpec("bar", f"{L}:endless_line", args=(8,), restart="temporary")]
        ).run()
    sizes = [len(m) for m in collector.messages("gymnasiarch.child.bar")]
    assert sum(sizes) == 8 * 2**20
    assert max(sizes) <= 64 * 1024


async def test_spawn_children_can_inherit_our_output(capfd: pytest.CaptureFixture[str]) -> None:
    """output="inherit" under spawn: the child's stdout is ours, and still open."""
    with anyio.fail_after(30), pytest.raises(PrematureTaskDeathError):
        await Supervisor(
            [ChildSpec("loud", f"{L}:print_and_crash", restart="transient", output="inherit")],
            max_restarts=0,
            start_method="spawn",
        ).run()
    assert "hello from stdout" in capfd.readouterr().out


# -- a bounded queue ----------------------------------------------------------------------


class _WatchedHandler(LogClientHandler):
    """Ours, telling the test when an emit waits for room in the queue."""

    def __init__(self, config: dict[str, Any], **options: Any) -> None:
        super().__init__(config, **options)
        self.waiting = threading.Event()

    def _wait_for_room(self) -> None:
        self.waiting.set()
        super()._wait_for_room()


def test_a_client_faster_than_its_server_waits_for_it_and_loses_nothing(tmp_path: Path) -> None:
    """A server that does not read: emit waits with a bounded queue; then every record arrives."""
    path = str(tmp_path / "slow.sock")
    key = bytes(range(32))
    go = threading.Event()
    received: list[Any] = []

    def slow_server(listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(wire.encode({"t": "challenge", "nonce": "n"}))
            hello = wire.decode(wire.receive_frame(connection))
            assert wire.verify(key, "n", hello["mac"])
            go.wait(30)  # reads nothing until told
            while (message := wire.decode(wire.receive_frame(connection)))["t"] != "bye":
                received.extend(message["r"])

    count, cap = 20_000, 64 * 1024
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        server = threading.Thread(target=slow_server, args=(listener,))
        server.start()
        config = {"address": path, "ticket": "t", "key": key.hex(), "msgpack": True}
        handler = _WatchedHandler(config, max_queued_bytes=cap, close_timeout=30)
        log = logging.getLogger("bounded")
        log.propagate = False
        log.addHandler(handler)
        done = threading.Event()

        def log_them() -> None:
            for i in range(count):
                log.warning("record %d %s", i, "padding" * 10)
            done.set()

        writer = threading.Thread(target=log_them)
        writer.start()
        try:
            assert handler.waiting.wait(30), "the queue never filled up"
            assert not done.is_set()
            assert handler._pending_bytes <= cap + 1024  # one record over the cap, at most
            go.set()
            assert done.wait(30)
            handler.close()
        finally:
            go.set()
            log.removeHandler(handler)
            writer.join(30)
            server.join(30)
    assert [row[2] for row in received] == [f"record {i} {'padding' * 10}" for i in range(count)]
