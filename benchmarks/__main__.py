"""Run the ``bench_*`` modules of this package: ``python -m benchmarks [--quick] [--only NAME]``.

Each module's ``collect(quick)`` returns report rows; they are printed as one
table of medians and written to ``benchmarks/results/latest.json``. Timings
are reported, never asserted. ``--only logging`` runs ``bench_logging`` alone
(for working on one module); such a partial run leaves ``latest.json`` as it was.
"""

from __future__ import annotations

import compileall
import datetime
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

import benchmarks

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "figure",
    "baseline",
    "baseline median",
    "ours median",
    "ours/baseline",
    "better",
    "target",
)
DASH = "\u2014"
USAGE = "usage: python -m benchmarks [--quick] [--only NAME]"


def _format_seconds(value: float, unit: str) -> str:
    if value < 1e-3:  # per-record costs: in milliseconds they would all read 0.00
        return f"{value * 1e6:.2f} {unit.removesuffix('s')}\u00b5s"
    if unit == "CPU-s":
        return f"{value:.4f} CPU-s"
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.3f} s"


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return DASH
    if unit in ("s", "CPU-s"):
        return _format_seconds(value, unit)
    if unit == "B":
        return f"{value / 2**20:.2f} MiB"
    if unit == "rec/s":
        return f"{value:,.0f} rec/s"
    return f"{value:g} {unit}"


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    baseline = row["baseline"] if row["baseline_kind"] != "none" else DASH
    ratio = DASH if row["ratio"] is None else f"{row['ratio']:.2f}"
    samples = len(row["ours_samples"])
    if row["baseline_kind"] == "measured":
        samples_text = f"n={samples}/{len(row['baseline_samples'])}"
    else:
        samples_text = f"n={samples}"
    target = row["target"]
    met = row.get("meets_target")
    if met is not None:
        target = f"{target} [{'met' if met else 'MISSED'}]"
    return (
        row["figure"],
        baseline,
        _format(row["baseline_median"], row["unit"]),
        _format(row["ours_median"], row["unit"]),
        ratio,
        # A time is better lower, a throughput higher: the row says which.
        row.get("better", "lower"),
        f"{target}  {samples_text}" if target else samples_text,
    )


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    right = {2, 3, 4}  # numbers

    def render(line: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


def _parse(argv: list[str]) -> tuple[bool, str | None] | str:
    """``(quick, only)`` from the arguments, or what is wrong with them."""
    quick, only = False, None
    args = iter(argv)
    for arg in args:
        if arg == "--quick":
            quick = True
        elif arg == "--only":
            only = next(args, None)
            if only is None:
                return "--only needs a module name, e.g. --only logging"
            only = only if only.startswith("bench_") else f"bench_{only}"
        else:
            return f"unknown: {arg}"
    return quick, only


def _compile_bytecode() -> None:
    """Write the ``.pyc`` files of gymnasiarch and of these modules, as ``pip install`` does.

    With an editable install and ``PYTHONDONTWRITEBYTECODE`` set (this
    project's machines set it), every process would compile our modules
    from source on import: ~12 ms more per Ray actor, which no installed
    gymnasiarch pays, and which the baselines (the standard library, bare
    Ray) never pay either.
    """
    import gymnasiarch  # noqa: PLC0415

    for package in (gymnasiarch, benchmarks):
        for directory in package.__path__:
            compileall.compile_dir(directory, quiet=1)


def main(argv: list[str]) -> int:
    parsed = _parse(argv)
    if isinstance(parsed, str):
        print(f"{USAGE}; {parsed}")
        return 2
    quick, only = parsed
    _compile_bytecode()
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )
    if only is not None:
        if only not in names:
            print(f"{USAGE}; no module {only!r}; there are: {', '.join(names)}")
            return 2
        names = [only]
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        rows.extend(dict(row, module=name) for row in module.collect(quick=quick))
    elapsed = time.perf_counter() - began
    print()
    print(_table(rows))
    mode = "quick" if quick else "full"
    print(f"\nmedians; ratio = ours / baseline; {mode} run in {elapsed:.1f} s")
    if only is not None:
        print(f"--only {only}: a partial run, {RESULTS / 'latest.json'} left as it was")
        return 0
    RESULTS.mkdir(exist_ok=True)
    report = {
        "meta": {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "quick": quick,
            "elapsed_s": elapsed,
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "modules": names,
        },
        "columns": list(COLUMNS),
        "table": [dict(zip(COLUMNS, _cells(row), strict=True)) for row in rows],
        "rows": rows,
    }
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
