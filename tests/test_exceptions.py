"""The exception hierarchy: the seed's names, bases and signatures, and pickling."""

from __future__ import annotations

import inspect
import pickle
import signal

import pytest

from gymnasiarch import exceptions
from gymnasiarch.dynaloader import ErrorDuringImport
from gymnasiarch.exceptions import (
    DeadChildrenRisingAsZombiesError,
    FieldError,
    GymnasiarchError,
    InvalidRequestError,
    InvalidResponseError,
    PrematureTaskDeathError,
    SignalInterruptError,
    SimulationSetupError,
    SupervisionError,
    TasksNotFinishedError,
)

SEED_NAMES = {
    "AgentConductorFailedError",
    "BrainMuscleConnectionFailedError",
    "DeadChildrenRisingAsZombiesError",
    "EnvConductorFailedError",
    "EnvironmentHasNoUIDError",
    "ExperimentAlreadyRunningError",
    "ExperimentSetupFailedError",
    "InitializationFailedError",
    "InvalidRequestError",
    "InvalidResponseError",
    "OutOfActionSpaceError",
    "OutOfObservationSpaceError",
    "PrematureTaskDeathError",
    "ReplyIsNoneError",
    "RequestIsNoneError",
    "SignalInterruptError",
    "SimControllerFailedError",
    "SimulationSetupError",
    "TasksNotFinishedError",
    "UnknownModeError",
}

ALL_CLASSES = [getattr(exceptions, name) for name in exceptions.__all__]


def _roundtrip(error: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(error))


def test_all_twenty_seed_names_exist_under_the_common_base() -> None:
    """Every name of palaestrai.util.exception is here and is a GymnasiarchError."""
    assert set(exceptions.__all__) >= SEED_NAMES
    for name in SEED_NAMES:
        cls = getattr(exceptions, name)
        assert issubclass(cls, GymnasiarchError)
        assert issubclass(cls, Exception)


def test_simulation_setup_error_is_a_runtime_error() -> None:
    """SimulationSetupError keeps the seed's base class RuntimeError."""
    error = SimulationSetupError("run-7", "no environments")
    assert isinstance(error, RuntimeError)
    assert error.experiment_run_id == "run-7"
    assert error.message == "no environments"
    assert "run-7" in str(error)
    assert "no environments" in str(error)


@pytest.mark.parametrize("cls", [InvalidRequestError, InvalidResponseError])
def test_expected_got_errors_keep_the_seed_signature_and_message(cls: type) -> None:
    """InvalidRequestError(expected, got) reads 'Expected {expected}, got {got}.'."""
    assert list(inspect.signature(cls).parameters) == ["expected", "got"]
    error = cls("StartRequest", "StopRequest")
    assert str(error) == "Expected StartRequest, got StopRequest."
    assert (error.expected, error.got) == ("StartRequest", "StopRequest")


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_says_when_it_is_raised(cls: type) -> None:
    """Each exception class has a docstring of its own."""
    assert cls.__doc__
    assert cls.__doc__.strip()


def _example(cls: type[Exception]) -> Exception:
    if issubclass(cls, InvalidRequestError | InvalidResponseError):
        return cls("A", "B")
    if cls is SimulationSetupError:
        return cls("run-1", "broken")
    if issubclass(cls, FieldError):
        return cls("restart", "expected one of permanent, transient, temporary", "child 'env'")
    if issubclass(cls, SupervisionError):
        return cls(
            "something happened",
            child="env",
            pid=4242,
            exitcode=3,
            signum=int(signal.SIGTERM),
            restarts=2,
            remote_traceback="Traceback (most recent call last):\n  boom\n",
        )
    return cls("some message")


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_exception_survives_pickling_with_fields_and_message(cls: type) -> None:
    """Children's exceptions cross process boundaries: pickle keeps them whole."""
    error = _example(cls)
    copy = _roundtrip(error)
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


def test_supervision_fields_default_to_none_and_seed_style_construction_works() -> None:
    """The seed raised these bare or with a message; both still work."""
    bare = PrematureTaskDeathError()
    assert str(bare) == ""
    assert (bare.child, bare.pid, bare.exitcode, bare.signum) == (None, None, None, None)
    assert str(PrematureTaskDeathError("it died")) == "it died"


def test_supervision_error_message_names_what_a_caller_needs() -> None:
    """The message lists child, pid, exit status and restart count."""
    error = PrematureTaskDeathError(
        "gave up", child="sim", pid=17, signum=int(signal.SIGKILL), restarts=3
    )
    assert str(error) == "gave up (child 'sim', pid 17, signal SIGKILL, 3 restart(s))"
    assert error.signal_name == "SIGKILL"
    assert str(PrematureTaskDeathError(child="sim", exitcode=1)) == "child 'sim', exit code 1"


def test_signal_interrupt_error_names_the_signal() -> None:
    """SignalInterruptError carries the signal number and shows its name."""
    error = SignalInterruptError("interrupted", signum=int(signal.SIGINT))
    assert error.signal_name == "SIGINT"
    assert "SIGINT" in str(error)
    assert SignalInterruptError(signum=99).signal_name == "signal 99"


def test_zombie_error_lists_survivors_and_survives_pickling() -> None:
    """DeadChildrenRisingAsZombiesError names which children survived, with pids."""
    error = DeadChildrenRisingAsZombiesError("shutdown incomplete", zombies={"a": 1, "b": 2})
    assert "'a' (pid 1)" in str(error)
    assert "'b' (pid 2)" in str(error)
    copy = _roundtrip(error)
    assert isinstance(copy, DeadChildrenRisingAsZombiesError)
    assert copy.zombies == {"a": 1, "b": 2}


def test_tasks_not_finished_error_lists_pending_tasks() -> None:
    """TasksNotFinishedError names the tasks that did not finish."""
    error = TasksNotFinishedError("stop timed out", pending=["log-server", "signal-monitor"])
    assert error.pending == ("log-server", "signal-monitor")
    assert "pending: log-server, signal-monitor" in str(error)
    assert _roundtrip(error).pending == error.pending  # type: ignore[attr-defined]


def test_attributes_set_after_construction_survive_pickling() -> None:
    """State a caller attaches to a supervision error travels with it."""
    error = PrematureTaskDeathError(child="env")
    error.extra_note = "from the outer supervisor"  # type: ignore[attr-defined]
    assert _roundtrip(error).extra_note == "from the outer supervisor"  # type: ignore[attr-defined]


def test_error_during_import_pickles_even_when_its_cause_cannot() -> None:
    """ErrorDuringImport keeps its text and traceback even for an unpicklable cause."""

    class Local(Exception):  # defined in a function: cannot be pickled
        pass

    def fail() -> None:
        raise Local("deep trouble")

    try:
        fail()
    except Local as cause:
        error = ErrorDuringImport("some/file.py", (Local, cause, cause.__traceback__))
    assert isinstance(error, GymnasiarchError)
    copy = _roundtrip(error)
    assert isinstance(copy, ErrorDuringImport)
    assert copy.filename == "some/file.py"
    assert "deep trouble" in str(copy)
    assert "Local" in copy.traceback_text
    assert "deep trouble" in copy.traceback_text
