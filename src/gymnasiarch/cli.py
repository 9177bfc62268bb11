"""The ``gymnasiarch`` command line (also ``python -m gymnasiarch``).

``gymnasiarch demo`` runs the bundled simulation (:mod:`gymnasiarch.demo`);
``gymnasiarch check TREE.toml`` validates a tree file and imports every
target without starting anything; ``gymnasiarch run TREE.toml`` supervises
the tree until it ends or is interrupted. Exit codes of ``run``: 0 when the
tree finished cleanly, 1 when the supervisor gave up (the failing child and
its traceback are printed last), 128+N after signal N, 2 for a bad file.
Bad input gets one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from gymnasiarch.exceptions import GymnasiarchError, SignalInterruptError

if TYPE_CHECKING:  # imported where used: ``gymnasiarch --help`` stays fast
    from anyio.abc import TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream

    from gymnasiarch._cli.live import LiveStatus
    from gymnasiarch._supervisor.events import Event
    from gymnasiarch._supervisor.supervisor import Supervisor

__all__ = ["main"]

logger = logging.getLogger("gymnasiarch.cli")

EXIT_OK = 0
EXIT_GAVE_UP = 1
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gymnasiarch", description="Supervise the processes of a simulation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check", help="validate a tree file and import its targets; start nothing"
    )
    check.add_argument("tree", help="the tree file (TOML)")
    run = commands.add_parser("run", help="supervise the tree a file describes")
    run.add_argument("tree", help="the tree file (TOML)")
    demo = commands.add_parser(
        "demo", help="run the bundled simulation: an environment, three agents, a flaky simulator"
    )
    demo.add_argument("--seed", type=int, default=None, help="the master seed (default 2024)")
    demo.add_argument("--steps", type=_positive_int, default=None, help="steps (default 40)")
    demo.add_argument(
        "--interval", type=_seconds, default=None, help="seconds per step (default 0.25)"
    )
    run.add_argument(
        "--control", metavar="PATH", help="the control socket (default: see `gymnasiarch status`)"
    )
    status = commands.add_parser("status", help="show the children of the running `run`")
    status.add_argument(
        "--json", action="store_true", help="one JSON object per child, a line each"
    )
    stop = commands.add_parser(
        "stop", help="stop the running `run` in order, or one child of it (it stays stopped)"
    )
    stop.add_argument(
        "child", nargs="?", help="a child to stop (group/child for a nested one); none: the tree"
    )
    start = commands.add_parser("start", help="start a child stopped with `stop CHILD` again")
    start.add_argument("child", help="its name (group/child for a nested one)")
    restart = commands.add_parser("restart", help="restart one child of the running `run`")
    restart.add_argument("child", help="its name (group/child for a nested one)")
    for command in (status, stop, start, restart):
        command.add_argument(
            "--control",
            metavar="PATH",
            help="the control socket of the run (default: $XDG_RUNTIME_DIR/gymnasiarch/"
            "control.sock, or /tmp/gymnasiarch-UID/control.sock)",
        )
    for command in (run, demo):
        command.add_argument(
            "--log-format",
            choices=("auto", "console", "json"),
            default="auto",
            help="console on a terminal and JSON lines otherwise (auto), or either one",
        )
        command.add_argument("--log-level", default="INFO", help="the root log level")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text}")
    return value


def _fail(message: str, code: int) -> int:
    print(f"gymnasiarch: {message}", file=sys.stderr)
    return code


def _check(tree: str) -> int:
    from gymnasiarch.treefile import TreeFileError, load_tree  # noqa: PLC0415 - fast --help

    try:
        supervisor = load_tree(tree, resolve=True)
    except TreeFileError as error:
        for mistake in error.mistakes:  # every one in one run, one line each
            _fail(str(mistake), EXIT_BAD_INPUT)
        return EXIT_BAD_INPUT
    count = sum(1 for info in supervisor.walk() if not info.nested)
    print(f"{tree}: ok ({count} {'child' if count == 1 else 'children'})")
    return EXIT_OK


def _run(tree: str, log_format: str, log_level: str, control: Path | None) -> int:
    from gymnasiarch._cli.control import default_path  # noqa: PLC0415 - fast --help
    from gymnasiarch.treefile import TreeFileError, load_tree  # noqa: PLC0415 - fast --help

    try:
        supervisor = load_tree(tree, resolve=True)  # an import error is a bad file: exit 2
    except TreeFileError as error:
        return _fail(str(error), EXIT_BAD_INPUT)
    return _supervise(supervisor, log_format, log_level, control or default_path())


def _control_command(options: argparse.Namespace) -> int:
    """status, stop, start and restart: one request to the running ``run``."""
    from gymnasiarch._cli.control import ControlError, default_path, request  # noqa: PLC0415

    path = Path(options.control) if options.control else default_path()
    message: dict[str, Any] = {"t": options.command}
    if getattr(options, "child", None) is not None:
        message["child"] = options.child
    try:
        reply = request(path, message)
    except ControlError as error:
        return _fail(str(error), EXIT_GAVE_UP)
    if not reply.get("ok"):
        return _fail(str(reply.get("error", "the supervisor refused")), EXIT_GAVE_UP)
    if options.command == "status" and options.json:
        for row in reply.get("children", []):
            print(json.dumps(row))
    elif options.command == "status":
        _status_table(reply.get("children", []))
    elif options.command == "stop" and options.child is None:
        print(f"stopping the supervisor at {path}")
    else:
        done = {"stop": "stopped", "start": "started", "restart": "restarted"}[options.command]
        print(f"{done} {options.child}")
    return EXIT_OK


def _status_table(children: list[dict[str, Any]]) -> None:
    # A program's sd_notify STATUS gets a column where any child has one.
    statuses = any(child.get("status") for child in children)
    # So do the ports the supervisor picked for programs: api=40123.
    ports = any(child.get("ports") for child in children)
    # And what children passed to ready(value), where one passed something.
    values = any(child.get("ready_value") is not None for child in children)
    from gymnasiarch._spec import format_size  # noqa: PLC0415 - fast --help

    head: tuple[str, ...] = ("child", "pid", "state", "uptime", "restarts", "crashes")
    head = (*head, "memory", "cpu", "last exit")
    head = (*head, "status") if statuses else head
    head = (*head, "ports") if ports else head
    rows: list[tuple[str, ...]] = [(*head, "ready value") if values else head]
    for child in children:
        uptime = child.get("uptime")
        row: tuple[str, ...] = (
            str(child.get("name")),
            str(child.get("pid") or "-"),
            str(child.get("state")),
            _duration(uptime) if isinstance(uptime, int | float) else "-",
            str(child.get("restarts")),
            str(child.get("crashes", "-")),
            # Resident memory and CPU time of its process group, read at the request.
            format_size(memory) if isinstance(memory := child.get("memory"), int) else "-",
            _duration(cpu) if isinstance(cpu := child.get("cpu_seconds"), int | float) else "-",
            str(child.get("last_exit") or "-"),
        )
        row = (*row, str(child.get("status") or "-")) if statuses else row
        named = child.get("ports") or {}
        text = ",".join(f"{name}={port}" for name, port in named.items()) or "-"
        row = (*row, text) if ports else row
        rows.append((*row, _ready_text(child.get("ready_value"))) if values else row)
    _print_table(rows, sys.stdout)


def _ready_text(value: object, width: int = 40) -> str:
    """A ready value in a table cell: compact JSON, cut to *width* characters."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{seconds:.1f}s"


def _demo(options: argparse.Namespace) -> int:
    from gymnasiarch.treefile import load_tree  # noqa: PLC0415 - fast --help

    with importlib.resources.as_file(
        importlib.resources.files("gymnasiarch.demo") / "tree.toml"
    ) as tree:
        supervisor = load_tree(tree, add_to_path=False)
    folder = tempfile.mkdtemp(prefix="gymnasiarch-demo-")  # private: mode 0700
    config = dict(supervisor.runtime_config)
    config["address"] = os.path.join(folder, "world.sock")
    config["channel_key"] = secrets.token_hex(16)
    if options.steps is not None:
        config["steps"] = options.steps
    if options.interval is not None:
        config["interval"] = options.interval
    changes: dict[str, Any] = {"runtime_config": config}
    if options.seed is not None:
        changes["seed"] = options.seed
    supervisor.configure(**changes)
    try:
        return _supervise(supervisor, options.log_format, options.log_level)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Session:
    """One supervised run of a tree from the command line, and what it saw."""

    def __init__(
        self, supervisor: Supervisor, live: LiveStatus | None, control: Path | None
    ) -> None:
        self.supervisor = supervisor
        self.live = live
        self.control = control
        self.exits: Counter[str] = Counter()
        self.results: dict[str, Any] = {}
        self.failure: GymnasiarchError | None = None
        self.refused: str | None = None
        # Each nested supervisor that gave up during the run: its parent may
        # have restarted it, so the run's end need not show it.
        self.groups_gave_up: list[str] = []
        self._control_scope: anyio.CancelScope | None = None

    async def supervise(self) -> None:
        from gymnasiarch._cli.control import ControlError  # noqa: PLC0415 - fast --help

        with contextlib.ExitStack() as subscriptions:
            async with anyio.create_task_group() as group:
                if self.control is not None:
                    try:
                        await group.start(self._serve_control)
                    except (ControlError, OSError) as error:
                        self.refused = f"control socket: {error}"
                        return
                # The root's stream carries the whole tree's events, each
                # with its child's path; it ends when the root stops.
                events = subscriptions.enter_context(self.supervisor.events())
                group.start_soon(self._follow, events)
                try:
                    self.results.update(await self.supervisor.run())
                except GymnasiarchError as error:
                    self.failure = error
                finally:
                    if self._control_scope is not None:  # the tree is done
                        self._control_scope.cancel()

    async def _serve_control(self, *, task_status: TaskStatus[None]) -> None:
        from gymnasiarch._cli.control import ControlServer  # noqa: PLC0415 - fast --help

        assert self.control is not None
        with anyio.CancelScope() as self._control_scope:
            await ControlServer(self.supervisor, self.control).serve(task_status=task_status)

    def _ports_of(self, event: Event, name: str | None) -> dict[str, Any] | None:
        """The ports a program's ``ready`` event announces (its ready value), else None."""
        if event.kind != "ready" or name is None or not isinstance(event.value, dict):
            return None
        try:
            picked = self.supervisor.child_info(name).ports
        except KeyError:  # removed since: its value is not known to be ports
            return None
        return event.value if picked else None

    async def _follow(self, events: MemoryObjectReceiveStream[Event]) -> None:
        from gymnasiarch._cli.control import status_rows  # noqa: PLC0415 - fast --help

        async for event in events:
            name = event.path if event.child else None
            if event.kind == "exited" and name:
                self.exits[name] += 1
            if event.kind == "gave_up" and name and "/" in name:
                self.groups_gave_up.append(event.detail)
            group = name.rpartition("/")[0] if name else event.path
            _log_event(event, name, group or None, self._ports_of(event, name))
            if self.live is not None:
                self.live.update(status_rows(self.supervisor))


def _supervise(
    supervisor: Supervisor, log_format: str, log_level: str, control: Path | None = None
) -> int:
    from gymnasiarch._cli.live import LiveStatus  # noqa: PLC0415 - fast --help
    from gymnasiarch.logging import configure  # noqa: PLC0415

    # On a terminal, the tree's status stays pinned under the log stream.
    live = None
    if log_format != "json" and sys.stderr.isatty():
        live = LiveStatus(sys.stderr, f"gymnasiarch: {supervisor.name}")
    try:
        configure(log_level.upper(), renderer=log_format, stream=live)  # type: ignore[arg-type]
    except ValueError as error:
        return _fail(f"--log-level: {error}", EXIT_BAD_INPUT)
    session = _Session(supervisor, live, control)
    anyio.run(session.supervise)
    if live is not None:
        live.close()
    if session.refused:
        return _fail(session.refused, EXIT_BAD_INPUT)
    problem = session.failure
    out = sys.stdout if problem is None else sys.stderr
    _summary(supervisor, session.exits, session.results, out)
    for why in session.groups_gave_up:
        print(f"gymnasiarch: {why}", file=out)
    if problem is None:
        return EXIT_OK
    if isinstance(problem, SignalInterruptError):
        print(f"gymnasiarch: stopped on {problem.signal_name}", file=sys.stderr)
        return 128 + (problem.signum or 0)
    _report(problem, sys.stderr)
    return EXIT_GAVE_UP


def _log_event(
    event: Event, child: str | None, supervisor: str | None, ports: dict[str, Any] | None = None
) -> None:
    """One structured line per lifecycle event, for whoever watches the log.

    *ports*: a program's picked ports, for its ``ready`` line (``http=40123``,
    as ``status`` shows them).
    """
    fields: dict[str, Any] = {"child": child, "pid": event.pid, "supervisor": supervisor}
    if child is not None:
        fields["restarts"] = event.restarts
    if ports:
        fields["ports"] = ",".join(f"{name}={port}" for name, port in ports.items())
    if event.detail:
        fields["detail"] = event.detail
    level = (
        logging.WARNING if event.kind in ("gave_up", "exited") and event.detail else logging.INFO
    )
    if event.kind == "exited" and (event.exitcode == 0 or event.requested):
        level = logging.INFO  # a child the supervisor stopped on purpose: no alarm
    logger.log(level, event.kind, extra={k: v for k, v in fields.items() if v is not None})


def _summary(
    supervisor: Supervisor, exits: Counter[str], results: dict[str, Any], out: TextIO
) -> None:
    """A table of every child in the tree: restarts, exits, last exit, result."""
    rows = [("child", "restarts", "crashes", "exits", "last exit", "result")]
    for info in supervisor.walk():
        last = info.last_exit.describe() if info.last_exit is not None else "-"
        counts = (str(info.restarts), str(info.crashes), str(exits[info.path]), last)
        if info.nested:
            rows.append((info.path, *counts, "(supervisor)"))
            continue
        found: Any = results
        for part in info.path.split("/"):  # a nested group's result is its children's dict
            found = found.get(part, _NO_RESULT) if isinstance(found, dict) else _NO_RESULT
        result = "-" if found is _NO_RESULT else repr(found)
        if len(result) > 60:
            result = result[:57] + "..."
        rows.append((info.path, *counts, result))
    _print_table(rows, out)


_NO_RESULT = object()


def _print_table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def _report(error: BaseException, out: TextIO) -> None:
    """The failing child and its own traceback, printed last."""
    print(f"\n{type(error).__name__}: {error}", file=out)
    remote = getattr(error, "remote_traceback", None)
    if remote:
        print(f"\nthe child's traceback:\n{remote}", file=out)
    output = getattr(error, "output", None)
    if output and output not in str(error):  # its message may quote it already
        print(f"\nwhat it wrote to stderr last:\n{output}", file=out)
    if not remote and error.__cause__ is not None:
        print(f"\ncaused by {type(error.__cause__).__name__}: {error.__cause__}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    options = _parser().parse_args(argv)
    if options.command == "check":
        return _check(options.tree)
    if options.command == "demo":
        return _demo(options)
    if options.command in ("status", "stop", "start", "restart"):
        return _control_command(options)
    control = Path(options.control) if options.control else None
    return _run(options.tree, options.log_format, options.log_level, control)


def console_main() -> None:
    """The console script's entry point."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # A Ctrl-C before the supervisor's own handling began (while the
        # tree file's targets were imported): no traceback, the shell's code.
        print("gymnasiarch: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
