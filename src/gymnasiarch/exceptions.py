"""The exceptions gymnasiarch raises, and the ones it carries across processes.

Every exception here derives from :class:`GymnasiarchError`, so ``except
GymnasiarchError`` catches anything the library raises on purpose. The names
and constructor signatures are those of ``palaestrai.util.exception``; code
written against that module keeps working.

The hierarchy::

    GymnasiarchError
    ├── SupervisionError                  (keyword-only fields, see below)
    │   ├── PrematureTaskDeathError        a child died and the supervisor gave up
    │   ├── DeadChildrenRisingAsZombiesError  children survived shutdown or SIGKILL
    │   ├── SignalInterruptError           SIGINT/SIGTERM/SIGHUP stopped the tree
    │   ├── TasksNotFinishedError          tasks outlived their stop deadline
    │   ├── ResultNotSentError             a child's return value could not be sent back
    │   ├── ChildEndedError                a child awaited with wait_ready() ended for good
    │   ├── ChildOverLimitError            a child went over its max_memory and was stopped
    │   └── ChildHungError                 a child missed its watchdog deadline (hung)
    ├── InitializationFailedError         a child could not be constructed or started
    ├── ExperimentSetupFailedError
    ├── ExperimentAlreadyRunningError
    ├── AgentConductorFailedError
    ├── EnvConductorFailedError
    ├── SimControllerFailedError
    ├── BrainMuscleConnectionFailedError
    ├── EnvironmentHasNoUIDError
    ├── InvalidRequestError(expected, got)
    ├── InvalidResponseError(expected, got)
    ├── RequestIsNoneError
    ├── ReplyIsNoneError
    ├── OutOfActionSpaceError
    ├── OutOfObservationSpaceError
    ├── UnknownModeError
    ├── SimulationSetupError(experiment_run_id, message)   (also a RuntimeError)
    └── FieldError(field, message, owner)  a bad value for one field of a spec
        ├── FieldValueError                 (also a ValueError)
        └── FieldTypeError                  (also a TypeError)

:class:`gymnasiarch.dynaloader.ErrorDuringImport` derives from
:class:`GymnasiarchError` too; it lives in the module that raises it, as in the
original.

Why the pickling care: a child's exception travels to the parent, and the
supervisor's errors travel up a supervision tree that may span processes.
``BaseException`` pickles itself as ``type(exc)(*exc.args)``, which breaks for
any class whose ``__init__`` takes something other than ``*args``. Every class
here therefore passes all of its constructor arguments to
``super().__init__`` and formats its message in ``__str__``; the classes with
keyword-only fields rebuild themselves through :meth:`__reduce__`.
"""

from __future__ import annotations

import os as _os
import re as _re
import signal as _signal
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "AgentConductorFailedError",
    "BrainMuscleConnectionFailedError",
    "ChildEndedError",
    "ChildHungError",
    "ChildOverLimitError",
    "DeadChildrenRisingAsZombiesError",
    "EnvConductorFailedError",
    "EnvironmentHasNoUIDError",
    "ExperimentAlreadyRunningError",
    "ExperimentSetupFailedError",
    "FieldError",
    "FieldTypeError",
    "FieldValueError",
    "GymnasiarchError",
    "InitializationFailedError",
    "InvalidRequestError",
    "InvalidResponseError",
    "OutOfActionSpaceError",
    "OutOfObservationSpaceError",
    "PrematureTaskDeathError",
    "ReplyIsNoneError",
    "RequestIsNoneError",
    "ResultNotSentError",
    "SignalInterruptError",
    "SimControllerFailedError",
    "SimulationSetupError",
    "SupervisionError",
    "TasksNotFinishedError",
    "UnknownModeError",
]


class GymnasiarchError(Exception):
    """Base class of every exception gymnasiarch raises deliberately."""


def _rebuild(
    cls: type[SupervisionError], args: tuple[Any, ...], fields: dict[str, Any]
) -> SupervisionError:
    """Unpickle a :class:`SupervisionError` with its keyword-only fields."""
    return cls(*args, **fields)


def _signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SupervisionError(GymnasiarchError):
    """Base class of the errors a supervisor raises about its children.

    Every field is optional and keyword-only, so the seed's bare
    ``PrematureTaskDeathError()`` and ``PrematureTaskDeathError("text")``
    still work. The supervisor fills in what it knows:

    Attributes:
        child: Name of the child the error is about.
        pid: Process id of that child, if it had one.
        exitcode: The child's exit code, if it exited on its own.
        signum: Number of the signal that ended the child (or, for
            :class:`SignalInterruptError`, the signal the supervisor got).
        restarts: How often the child had been restarted before this.
        remote_traceback: The child's own formatted traceback, if it raised.
        output: The last lines the child wrote to its stderr, if it was
            captured: what it said last, even when it died before its
            logging was set up.
    """

    def __init__(
        self,
        *args: object,
        child: str | None = None,
        pid: int | None = None,
        exitcode: int | None = None,
        signum: int | None = None,
        restarts: int | None = None,
        remote_traceback: str | None = None,
        output: str | None = None,
    ) -> None:
        super().__init__(*args)
        self.output = output
        self.child = child
        self.pid = pid
        self.exitcode = exitcode
        self.signum = signum
        self.restarts = restarts
        self.remote_traceback = remote_traceback

    @property
    def signal_name(self) -> str | None:
        """The name of :attr:`signum` (``"SIGKILL"``), or ``None``."""
        return None if self.signum is None else _signal_name(self.signum)

    def _fields(self) -> dict[str, Any]:
        """The keyword-only fields, as the constructor takes them."""
        return {
            "child": self.child,
            "pid": self.pid,
            "exitcode": self.exitcode,
            "signum": self.signum,
            "restarts": self.restarts,
            "remote_traceback": self.remote_traceback,
            "output": self.output,
        }

    def __reduce__(
        self,
    ) -> tuple[Callable[..., SupervisionError], tuple[Any, ...], dict[str, Any]]:
        # The third item is the instance __dict__: attributes a caller set on
        # the exception after construction survive the trip as well.
        return (_rebuild, (type(self), self.args, self._fields()), self.__dict__)

    def _details(self) -> list[str]:
        details = []
        if self.child is not None:
            details.append(f"child {self.child!r}")
        if self.pid is not None:
            details.append(f"pid {self.pid}")
        if self.exitcode is not None:
            details.append(f"exit code {self.exitcode}")
        if self.signum is not None:
            details.append(f"signal {self.signal_name}{_hung_signal_note(self)}")
        if self.restarts is not None:
            details.append(f"{self.restarts} restart(s)")
        return details

    def __str__(self) -> str:
        message = super().__str__()
        details = ", ".join(self._details())
        if message and details:
            return f"{message} ({details})"
        return message or details


class PrematureTaskDeathError(SupervisionError):
    """Raised when a task (a supervised child) died before its time.

    The supervisor raises it when a child ended abnormally (a non-zero exit
    code, a signal, or an exception) and its restart type or the restart
    intensity (``max_restarts`` within ``max_seconds``) says to give up, and
    when a *significant* child ends abnormally. If the child raised, its
    traceback text is in :attr:`remote_traceback` and the exception's
    ``__cause__`` shows it.
    """


class DeadChildrenRisingAsZombiesError(SupervisionError):
    """Raised when children died and started to become zombies.

    The supervisor raises it when children are still alive after shutdown and
    escalation to SIGKILL, or could not be reaped in time (a process stuck in
    uninterruptible sleep, say). :attr:`zombies` names them with their pids.
    """

    def __init__(
        self,
        *args: object,
        zombies: dict[str, int] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(*args, **fields)
        self.zombies: dict[str, int] = dict(zombies or {})

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "zombies": self.zombies}

    def _details(self) -> list[str]:
        details = super()._details()
        if self.zombies:
            listed = ", ".join(f"{n!r} (pid {p})" for n, p in self.zombies.items())
            details.append(f"still alive: {listed}")
        return details


class SignalInterruptError(SupervisionError):
    """Raised when a signal was received.

    The supervisor raises it after SIGINT, SIGTERM or SIGHUP made it shut the
    whole tree down in order; :attr:`signum` says which signal it was. By the
    time the caller sees it, every child has been stopped and reaped.
    """


class TasksNotFinishedError(SupervisionError):
    """Raised when tasks did not finish when they should have.

    The supervisor raises it when it was asked to stop but some of its tasks
    did not finish before the stop deadline. (The original raised it when
    neither its signal monitor nor its transceiver task returned.)
    :attr:`pending` names the tasks.
    """

    def __init__(
        self,
        *args: object,
        pending: tuple[str, ...] | list[str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(*args, **fields)
        self.pending: tuple[str, ...] = tuple(pending or ())

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "pending": self.pending}

    def _details(self) -> list[str]:
        details = super()._details()
        if self.pending:
            details.append("pending: " + ", ".join(self.pending))
        return details


class InitializationFailedError(GymnasiarchError):
    """Raised when initialization failed.

    gymnasiarch raises it when a child's target could not be constructed
    (:func:`gymnasiarch.dynaloader.load_with_params` with a constructor that
    raised or parameters it does not take), and when a child did not signal
    readiness within its ``ready_timeout``. The original raised it when the
    initialization of an experiment failed.

    Attributes:
        output: The last lines the child wrote to its stderr, when the
            supervisor raised it for a child (``None`` otherwise).
    """

    output: str | None = None


class ExperimentSetupFailedError(GymnasiarchError):
    """Raised when the experiment setup failed (kept for palaestrAI code)."""


class ExperimentAlreadyRunningError(GymnasiarchError):
    """Raised during experiment start if the experiment is already running."""


class AgentConductorFailedError(GymnasiarchError):
    """Raised when an error occurs while an agent conductor runs."""


class EnvConductorFailedError(GymnasiarchError):
    """Raised when an error occurs while an environment conductor runs."""


class SimControllerFailedError(GymnasiarchError):
    """Raised when a simulation controller could not be started."""


class BrainMuscleConnectionFailedError(GymnasiarchError):
    """Raised when an agent's brain cannot bind its port (already in use)."""


class EnvironmentHasNoUIDError(GymnasiarchError):
    """Raised when an environment in a multi-environment setup has no UID."""


class _ExpectedGotError(GymnasiarchError):
    """A request/response mismatch: what was expected, what came instead."""

    def __init__(self, expected: object, got: object) -> None:
        super().__init__(expected, got)
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        return f"Expected {self.expected}, got {self.got}."


class InvalidRequestError(_ExpectedGotError):
    """Raised when a wrong request was received."""


class InvalidResponseError(_ExpectedGotError):
    """Raised when a wrong response was received."""


class RequestIsNoneError(GymnasiarchError):
    """Raised when a request is None."""


class ReplyIsNoneError(GymnasiarchError):
    """Raised when a reply is None."""


class OutOfActionSpaceError(GymnasiarchError):
    """Raised when an actuator receives a value outside its action space."""


class OutOfObservationSpaceError(GymnasiarchError):
    """Raised when a sensor value lies outside its observation space."""


class UnknownModeError(GymnasiarchError):
    """Raised when an agent's muscle receives a mode it does not know."""


class SimulationSetupError(GymnasiarchError, RuntimeError):
    """Raised when the setup of a simulation (an experiment run) failed.

    Attributes:
        experiment_run_id: The run whose setup failed.
        message: What went wrong.
    """

    def __init__(self, experiment_run_id: object, message: str) -> None:
        super().__init__(experiment_run_id, message)
        self.experiment_run_id = experiment_run_id
        self.message = message

    def __str__(self) -> str:
        return f"Simulation setup of run {self.experiment_run_id} failed: {self.message}"


class ResultNotSentError(SupervisionError):
    """Raised when a child's target returned a value that could not be sent back.

    The target ran to its end, but what it returned does not pickle (it
    holds a lock, a socket, an open file, a local function, ...), so the
    supervisor cannot have it. This is not a crash: running the target again
    would return the same kind of value again (a training run that returns
    its model would train once more for nothing), so the child is not
    restarted, and the supervisor raises this error after an orderly
    shutdown. Return plain data instead (the model's weights, a path to
    where it was saved).

    Attributes:
        type_name: The type of the object pickle failed on, e.g.
            ``"_thread.lock"``: a part of the value, or the value itself.
        result_type: The type of the value the target returned.
        reason: What pickle said.
    """

    def __init__(
        self,
        *args: object,
        type_name: str | None = None,
        result_type: str | None = None,
        reason: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(*args, **fields)
        self.type_name = type_name
        self.result_type = result_type
        self.reason = reason

    def _fields(self) -> dict[str, Any]:
        return {
            **super()._fields(),
            "type_name": self.type_name,
            "result_type": self.result_type,
            "reason": self.reason,
        }

    def _details(self) -> list[str]:
        details = super()._details()
        if self.type_name is not None:
            details.append(f"cannot pickle {self.type_name}")
        return details


class ChildOverLimitError(SupervisionError):
    """A child's resident memory went over its ``max_memory``, and it was stopped.

    The supervisor samples the resident memory of each child's process
    group (the child and its subprocesses) at a stated interval; a child
    found over its ceiling is stopped as a supervisor stops any child (its
    stop signal, its ``shutdown`` grace, SIGKILL) and its end counts as
    abnormal: it is restarted as its restart type says and counts toward
    the restart intensity. A supervisor that gives up raises
    :class:`PrematureTaskDeathError` with this error as its ``__cause__``.

    Attributes:
        limit: The name of the limit (``"max_memory"``).
        limit_bytes: The ceiling, in bytes.
        measured: The resident memory measured, in bytes.
    """

    def __init__(
        self,
        *args: object,
        limit: str | None = None,
        limit_bytes: int | None = None,
        measured: int | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(*args, **fields)
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.measured = measured

    def _fields(self) -> dict[str, Any]:
        return {
            **super()._fields(),
            "limit": self.limit,
            "limit_bytes": self.limit_bytes,
            "measured": self.measured,
        }


#: Where our own private modules are: this package's directory here, and
#: an installed copy's anywhere (a child on a Ray node may have its own).
_OUR_MODULES = (
    _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "_"),
    f"{_os.sep}site-packages{_os.sep}gymnasiarch{_os.sep}_",
    f"{_os.sep}dist-packages{_os.sep}gymnasiarch{_os.sep}_",
)


def _in_our_modules(frame: str) -> bool:
    """Whether a dumped frame (``File "PATH", line N in F``) is in one of our private modules."""
    path = frame.partition('File "')[2].rpartition('", line ')[0]
    return path.startswith(_OUR_MODULES[0]) or any(where in path for where in _OUR_MODULES[1:])


def _our_helper_thread(frames: list[str]) -> bool:
    """Whether a dumped thread is one of gymnasiarch's own in the child (not its main thread)."""
    ours = any(_in_our_modules(frame) for frame in frames)
    return ours and not any(" in child_main" in frame for frame in frames)


def _hung_signal_note(error: SupervisionError) -> str:
    """Why a hung child ended by its signal: the watchdog's (not a signal someone sent)."""
    if not isinstance(error.__cause__, ChildHungError) and not isinstance(error, ChildHungError):
        return ""
    if error.signum == _signal.SIGKILL:
        return ": the watchdog's kill"
    # The other way a hung child ends: by the signal that asks it for its
    # stacks (output.DUMP_SIGNAL, SIGUSR2), whose default action follows
    # the dump. Any other signal was someone else's: no note.
    if error.signum == _signal.SIGUSR2:
        return ": the watchdog's stack dump request, which ends it"
    return ""


#: How many places :meth:`ChildHungError.stuck_at` names in the error's text
#: (the first ones: the main thread's first); ``stuck_at()`` has them all.
_STUCK_SHOWN = 5
#: A thread's header in a faulthandler dump (``all_threads=True``), exactly:
#: a child's own line that merely starts so ("Thread pool: ...") is none.
#: The one definition: the process layer matches its children's stderr by it.
_THREAD_HEADER = _re.compile(r"(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):")
#: The standard library's files, here and (a Ray node) anywhere: not the user's code.
_STDLIB = _re.compile(r"""(^<frozen |[/\\]lib[/\\]python3\.\d+[/\\](?!.*-packages[/\\]))""")
#: Frames of how a child process starts (multiprocessing's bootstrap, the
#: fork server's, runpy), left out of the stack an error shows (``stack`` keeps them).
_BOOTSTRAP = _re.compile(r"""[/\\](multiprocessing[/\\][^"]*|runpy\.py)", line """)


class _DumpedThread:
    """One thread of a faulthandler dump: its label and frames (source line joined)."""

    def __init__(self, header: str, main: bool) -> None:
        self.header = header
        self.main = main
        ident = header.split(" (most recent call first)", maxsplit=1)[0].rpartition(" ")[2]
        self.label = "main thread" if main else f"thread {ident}"
        self.frames: list[str] = []  # 'File "PATH", line N in F: source'
        self.lines: list[str] = []  # as dumped: each frame, then its source line


def _split_dump(lines: Iterable[str]) -> tuple[list[list[str]], bool]:
    """A faulthandler dump's threads, each its header and then its lines; and whether it was cut.

    Lines before the first thread (the child's own output) are left out;
    *cut* says faulthandler stopped after 100 threads (its line ``...``).
    """
    blocks: list[list[str]] = []
    cut = False
    for line in lines:
        if _THREAD_HEADER.fullmatch(line):
            blocks.append([line])
        elif line == "...":
            cut = True
        elif blocks and line.strip():
            blocks[-1].append(line)
    return blocks, cut


def _main_thread_index(blocks: list[list[str]], cut: bool) -> int | None:
    """Which of a dump's threads (see :func:`_split_dump`) is the main thread, if any is.

    The oldest, dumped last, unless faulthandler cut the dump after 100
    threads; else the one that took the dump, "Current thread" (Linux hands
    a process's signal to its main thread unless that blocks it).
    """
    if blocks and not cut:
        return len(blocks) - 1
    return next((i for i, b in enumerate(blocks) if b[0].startswith("Current thread ")), None)


def _dumped_threads(stack: str) -> list[_DumpedThread]:
    """The threads of a dump, in its order (newest first); its main thread marked."""
    blocks, cut = _split_dump(stack.splitlines())
    threads: list[_DumpedThread] = []
    for header, *lines in blocks:
        thread = _DumpedThread(header, main=False)
        for number, line in enumerate(lines):
            if line.startswith("  File "):
                frame = line.strip()
                following = lines[number + 1] if number + 1 < len(lines) else ""
                if following.startswith("    "):  # its source line (see the process layer)
                    frame = f"{frame}: {following.strip()}"
                thread.frames.append(frame)
                thread.lines.append(line)
            elif line.startswith("    "):
                thread.lines.append(line)
        threads.append(thread)
    main = _main_thread_index(blocks, cut)
    if main is not None:
        threads[main].main, threads[main].label = True, "main thread"
    return threads


def _frame_path(frame: str) -> str:
    return frame.partition('File "')[2].rpartition('", line ')[0]


def _short_frame(frame: str) -> str:
    """A frame, short: ``threading.py:327 in wait: x``.

    From ``File "/usr/lib/python3.11/threading.py", line 327 in wait: x``.
    """
    path = _frame_path(frame)
    rest = frame.partition('", line ')[2]  # "327 in wait: x"
    line, _, where = rest.partition(" in ")
    parent, name = _os.path.split(path)
    if name == "__init__.py":
        name = f"{_os.path.basename(parent)}/{name}"
    return f"{name}:{line} in {where}"


def _stuck_where(frames: list[str]) -> str:
    """Where a thread was stuck: its innermost frame of the user's code, or its top frame."""
    for depth, frame in enumerate(frames):
        if not _STDLIB.search(_frame_path(frame)) and not _in_our_modules(frame):
            if depth == 0:
                return frame
            inner = _short_frame(frames[0]).partition(": ")[0]  # without its source line
            return f"{frame} [in {inner}]"
    return _short_frame(frames[0])


def _shown_stack(stack: str) -> str:
    """*stack* as an error shows it: the user's threads, without the frames of a child's start.

    Left out: gymnasiarch's own helper threads, and the frames of
    multiprocessing's and the fork server's bootstrap and of gymnasiarch's
    child bootstrap, which every child has under its target. The main
    thread comes first, labelled so.
    """
    shown: list[str] = []
    for thread in sorted(_dumped_threads(stack), key=lambda t: not t.main):
        if not thread.frames or _our_helper_thread(thread.frames):
            continue
        shown.append(f"{thread.label} (most recent call first):")
        keep = True
        for line in thread.lines:
            if line.startswith("  File "):
                keep = not (_BOOTSTRAP.search(line) or _in_our_modules(line.strip()))
            if keep:
                shown.append(line)
        shown.append("")
    return "\n".join(shown).rstrip()


class ChildHungError(SupervisionError):
    """A child missed its watchdog deadline: it was hung, and was killed.

    A child whose spec sets ``watchdog=`` must show it is alive at least
    that often (``child_context().heartbeat()``, an ``async def`` child's
    turning event loop, a program's sd_notify ``WATCHDOG=1``). One that does
    not is asked for a dump of every thread's stack and killed with its
    process group; its end is abnormal, handled by its restart type and the
    strategy like any crash, and counted toward the restart intensity. A
    supervisor that gives up raises :class:`PrematureTaskDeathError` with
    this error as its ``__cause__``. Its text ends with where each thread
    was stuck (:meth:`stuck_at`).

    Attributes:
        seconds: Seconds since the child's last beat when it was found hung
            (measured, to a millisecond: more than the period where the
            supervisor's event loop was busy at the deadline), or ``None``
            for a program that said it was hung (sd_notify ``WATCHDOG=trigger``).
        watchdog: The child's watchdog period, in seconds.
        stack: The dump of every thread's stack (``faulthandler``'s text,
            each frame followed by its source line where the file could be
            read), capped: at most 1000 lines (each thread's top 20 and
            bottom 10 frames; the main thread and the one that dumped always
            kept) and faulthandler's 100 threads. Or ``None``: a program
            child, a child whose output is not captured
            (``output="inherit"``: the dump went to the supervisor's own
            stderr), or one that did not answer in time (its text says so).
    """

    def __init__(
        self,
        *args: object,
        seconds: float | None = None,
        watchdog: float | None = None,
        stack: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(*args, **fields)
        self.seconds = seconds
        self.watchdog = watchdog
        self.stack = stack

    def _fields(self) -> dict[str, Any]:
        return {
            **super()._fields(),
            "seconds": self.seconds,
            "watchdog": self.watchdog,
            "stack": self.stack,
        }

    def stuck_at(self) -> list[str]:
        """Where each thread was stuck, the main thread first; one line per place.

        A thread's place is its innermost frame of the user's code (with its
        source line), the standard library's frames above it named after it
        (``[in re/__init__.py:166 in match]``); a thread only in the
        standard library shows its top frame, short. Threads stuck at the
        same place are one line (``98 threads: threading.py:327 in wait:
        waiter.acquire()``). The threads gymnasiarch itself runs in a child
        (its log client's) are left out: they wait where they always wait.
        :attr:`stack` has them all.
        """
        places: dict[str, list[str]] = {}  # where -> the threads stuck there
        for thread in sorted(_dumped_threads(self.stack or ""), key=lambda t: not t.main):
            if thread.frames and not _our_helper_thread(thread.frames):
                places.setdefault(_stuck_where(thread.frames), []).append(thread.label)
        return [
            f"{labels[0] if len(labels) == 1 else f'{len(labels)} threads'}: {where}"
            for where, labels in places.items()
        ]

    def __str__(self) -> str:
        text = super().__str__()
        stuck = self.stuck_at()
        if not stuck:
            return text
        shown = [f"  {where}" for where in stuck[:_STUCK_SHOWN]]
        if len(stuck) > _STUCK_SHOWN:
            shown.append(f"  ... {len(stuck) - _STUCK_SHOWN} more places (see .stack)")
        if "..." in (self.stack or "").splitlines():
            # faulthandler's own cap: it dumps the newest 100 threads, the main one last.
            shown.append("  ... and more than 100 threads not dumped (the main thread among them)")
        return "\n".join([text, "stuck at:", *shown])

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}"
            for name, value in (("child", self.child), ("pid", self.pid), ("seconds", self.seconds))
            if value is not None
        )
        message = repr(self.args[0]) if self.args else ""
        return f"{type(self).__name__}({', '.join(part for part in (message, fields) if part)})"


class ChildEndedError(SupervisionError):
    """The child awaited with ``Supervisor.wait_ready()`` ended for good: it will not be ready.

    Raised to a waiter when no run of the child follows: its supervisor gave
    up (on it or on a sibling), it ended and its restart type does not
    restart it (a temporary child, a transient one that ended normally), it
    was stopped with ``terminate_child()``, or the tree stopped. A child
    between a crash and its restart is not ended: the waiter waits for the
    restarted run, as it does while a nested supervisor it is in is
    restarted by its parent.

    :attr:`child` is the child's path, :attr:`exitcode` and :attr:`signum`
    say how its last run ended (where it ran), and ``__cause__`` is the
    supervisor's own error where it gave up. The message says why once
    (gave up, stopped, not restarted, stopped with ``terminate_child()``).
    """

    def _details(self) -> list[str]:
        # The message names the child already: said once.
        details = super()._details()
        said = str(self.args[0]) if self.args else ""
        if self.child is not None and f"child {self.child!r}" in said:
            details.remove(f"child {self.child!r}")
        return details


class FieldError(GymnasiarchError):
    """A value given for one field of a spec or of a supervisor's options is wrong.

    Raised as :class:`FieldValueError` (also a :class:`ValueError`) or
    :class:`FieldTypeError` (also a :class:`TypeError`), so code that catches
    those keeps working; catch :class:`FieldError` to learn which field it was.
    A tree file's loader uses :attr:`field` to point at the key and its line.

    Args:
        field: The argument's name (``"restart"``), or a path into it
            (``"children[2]"``: the third of the children).
        message: What is wrong with it, without the field's name.
        owner: Whose field it is (``"child 'env'"``, ``"Backoff"``), or ``""``.

    The message reads ``"child 'env': restart: expected one of ..."``.
    """

    def __init__(self, field: str, message: str, owner: str = "") -> None:
        # All three go to args: the error pickles as type(e)(*e.args).
        super().__init__(field, message, owner)
        self.field = field
        self.message = message
        self.owner = owner

    def __str__(self) -> str:
        prefix = f"{self.owner}: " if self.owner else ""
        return f"{prefix}{self.field}: {self.message}"


class FieldValueError(FieldError, ValueError):
    """A field's value has the right type but is not allowed (a :class:`ValueError`)."""


class FieldTypeError(FieldError, TypeError):
    """A field's value has the wrong type (a :class:`TypeError`)."""
