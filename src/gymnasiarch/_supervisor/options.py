"""A supervisor's configuration as one frozen, validated value.

:class:`~gymnasiarch.Supervisor` builds its :class:`SupervisorOptions` from
its keyword arguments, so a bad option fails at construction, with a
:class:`~gymnasiarch.exceptions.FieldError` that names it. A nested
supervisor runs with its own options where it was given them and with its
parent's where it was not; the parent derives those with
:func:`dataclasses.replace` rather than by changing the nested one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gymnasiarch._runtime_config import RuntimeConfig
from gymnasiarch._spec import (
    RESTART_TYPES,
    START_METHODS,
    START_ORDERS,
    STRATEGIES,
    Backoff,
    RestartType,
    StartMethod,
    StartOrder,
    Strategy,
    check_bool,
    check_choice,
    check_name,
    check_seconds,
)
from gymnasiarch.exceptions import FieldTypeError, FieldValueError

if TYPE_CHECKING:
    from gymnasiarch._backends.base import Backend


@dataclass(frozen=True)
class SupervisorOptions:
    """Everything a :class:`~gymnasiarch.Supervisor` was configured with, but its children.

    The fields are the supervisor's keyword arguments of the same names
    (see there); *runtime_config* is always a
    :class:`~gymnasiarch.RuntimeConfig`, *max_seconds* and *kill_timeout*
    are floats. ``Supervisor.options`` gives the value;
    :meth:`Supervisor.configure <gymnasiarch.Supervisor.configure>` changes
    it before the supervisor starts.

    Raises:
        FieldValueError: A value that is not allowed (a ``ValueError`` too).
        FieldTypeError: A value of the wrong type (a ``TypeError`` too).
    """

    name: str = "supervisor"
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    seed: int | str | None = None
    runtime_config: RuntimeConfig = field(default_factory=RuntimeConfig, hash=False)
    start_order: StartOrder = "sequential"
    backoff: Backoff | None = None
    start_method: StartMethod | None = None
    kill_timeout: float = 2.0
    handle_signals: bool = True
    restart: RestartType = "permanent"
    significant: bool = False
    shutdown: float | None = None
    backend: Backend | None = None

    def __post_init__(self) -> None:
        check_name("name", self.name)
        check_choice("strategy", self.strategy, STRATEGIES)
        max_restarts: Any = self.max_restarts
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise FieldValueError("max_restarts", f"expected an int >= 0, got {max_restarts!r}")
        check_seconds("max_seconds", self.max_seconds, allow_none=False, positive=True)
        seed: Any = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
            raise FieldTypeError("seed", f"expected an int, a str or None, got {seed!r}")
        config: Any = self.runtime_config
        if not isinstance(config, RuntimeConfig):
            if config is not None and not isinstance(config, Mapping):
                raise FieldTypeError("runtime_config", f"expected a mapping, got {config!r}")
            try:
                config = RuntimeConfig(config)
            except TypeError as error:  # a key that is not a string
                raise FieldTypeError("runtime_config", str(error)) from None
        check_choice("start_order", self.start_order, START_ORDERS)
        backoff: Any = self.backoff
        if backoff is not None and not isinstance(backoff, Backoff):
            raise FieldTypeError("backoff", f"expected a Backoff or None, got {backoff!r}")
        if self.start_method is not None:
            check_choice("start_method", self.start_method, START_METHODS)
        check_seconds("kill_timeout", self.kill_timeout, allow_none=False)
        check_bool("handle_signals", self.handle_signals)
        check_choice("restart", self.restart, RESTART_TYPES)
        check_bool("significant", self.significant)
        if self.significant and self.restart == "permanent":
            raise FieldValueError(
                "significant", "a significant supervisor must be transient or temporary"
            )
        check_seconds("shutdown", self.shutdown, allow_none=True)
        # Normalized once here, so that every reader sees the same types.
        object.__setattr__(self, "runtime_config", config)
        object.__setattr__(self, "max_seconds", float(self.max_seconds))
        object.__setattr__(self, "kill_timeout", float(self.kill_timeout))

    @property
    def inherits_backend(self) -> bool:
        """Whether a supervisor with these options, nested, runs where its parent does.

        It does unless it was given a backend or a start method of its own.
        """
        return self.backend is None and self.start_method is None
