"""Report rows shared by the benchmark modules: medians, ratios, targets."""

from __future__ import annotations

import statistics
import sys
from typing import Any, Literal


def median(samples: list[float]) -> float | None:
    """The median of *samples*, or None if there are none."""
    return statistics.median(samples) if samples else None


def row(
    order: str,
    figure: str,
    ours: list[float],
    *,
    baseline: str,
    base: list[float] | None = None,
    model: float | None = None,
    unit: str = "s",
    target: str = "",
    target_value: float | None = None,
    better: Literal["lower", "higher"] = "lower",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line of the report; *base* is measured, *model* is arithmetic (not both).

    *better* says which way the figure is good: a time is better lower, a
    throughput higher; *target_value* is a bound in that direction.
    """
    ours_median = median(ours)
    base_median = model if model is not None else median(base or [])
    ratio = (
        ours_median / base_median
        if ours_median is not None and base_median  # a zero baseline has no ratio
        else None
    )
    meets = None
    if target_value is not None and ours_median is not None:
        meets = ours_median <= target_value if better == "lower" else ours_median >= target_value
    return {
        "order": order,
        "figure": figure,
        "baseline": baseline,
        "baseline_kind": "model" if model is not None else ("measured" if base else "none"),
        "baseline_median": base_median,
        "baseline_samples": base or [],
        "ours_median": ours_median,
        "ours_samples": ours,
        "ratio": ratio,
        "unit": unit,
        "better": better,
        "target": target,
        "target_value": target_value,
        "meets_target": meets,
        "extra": extra or {},
    }


def progress(module: str, text: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"[{module}] {text}", file=sys.stderr, flush=True)
