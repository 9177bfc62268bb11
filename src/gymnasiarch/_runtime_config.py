"""The runtime configuration a supervisor hands to every child.

palaestrAI's ``RuntimeConfig`` is a process-wide singleton that
``spawn_wrapper`` re-creates in each child from ``to_dict()``. Ours keeps that
shape, ``RuntimeConfig.current()`` in the child, ``to_dict()`` and
``from_dict()`` to cross the process boundary, but it is an immutable mapping
of plain values, so a child cannot change what its siblings see.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar


class RuntimeConfig(Mapping[str, Any]):
    """An immutable mapping of configuration values shared with every child.

    ``RuntimeConfig.current()`` returns the configuration of this process: in
    a supervised child, the one its supervisor was given; elsewhere, whatever
    :meth:`make_current` installed last (empty by default).

    Args:
        values: The configuration; it must survive pickling, because it
            travels to each child.
    """

    _current: ClassVar[RuntimeConfig | None] = None

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        if values is not None and not isinstance(values, Mapping):
            raise TypeError(f"runtime config must be a mapping, got {type(values).__name__}")
        self._values: dict[str, Any] = dict(values or {})
        for key in self._values:
            if not isinstance(key, str):
                raise TypeError(f"runtime config keys must be strings, got {key!r}")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RuntimeConfig({self._values!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RuntimeConfig):
            return self._values == other._values
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a mapping of possibly unhashable values

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy, the form that travels to children."""
        return dict(self._values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RuntimeConfig:
        """Build a configuration from what :meth:`to_dict` returned."""
        return cls(values)

    @classmethod
    def current(cls) -> RuntimeConfig:
        """The configuration in force in this process."""
        if cls._current is None:
            cls._current = cls()
        return cls._current

    def make_current(self) -> None:
        """Install this configuration as the one :meth:`current` returns."""
        RuntimeConfig._current = self
