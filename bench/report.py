"""What the benchmarks print: numbered step lines, progress meters rewritten in place, the results
tables, and the small formatting of their figures."""

from __future__ import annotations

import sys
import time


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 < fraction <= 1) of unsorted values; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def number(value: float) -> str:
    return f"{value:,.0f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def say(text: str = "", *, end: str = "\n") -> None:
    print(text, end=end, flush=True)


class Steps:
    """Numbered step lines, e.g. `[3/8] server     gunicorn ...` or `[close 2/4] floor    ...`;
    `begin` ... `end` time a step and finish its line with the result."""

    def __init__(self, total: int, *, label: str = "", width: int = 10):
        self.prefix = f"{label} " if label else ""
        self.total, self.width = total, width
        self.started = 0.0

    def line(self, step: int | str, name: str, text: str, *, end: str = "\n") -> None:
        say(f"[{self.prefix}{step}/{self.total}] {name:<{self.width}} {text}", end=end)

    def begin(self, step: int, name: str, what: str) -> None:
        self.started = time.monotonic()
        self.line(step, name, f"{what} ...", end="")

    def end(self, result: str) -> None:
        say(f" {result} ({time.monotonic() - self.started:.1f} s)")


class Meter:
    """A progress line rewritten in place: done/total, rate and time left."""

    def __init__(self, label: str, total: int, unit: str, *, indent: int = 6):
        self.label, self.total, self.unit, self.indent = label, total, unit, " " * indent
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.shown < 0.5:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate else 0
        say(f"\r{self.indent}{self.label}: {done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s, "
            f"{elapsed:.0f} s, ~{left:.0f} s left)   ", end="")  # fmt: skip

    def finish(self, done: int) -> float:
        self.update(done, force=True)
        say()
        return time.monotonic() - self.started


def table(rows: list[tuple[str, ...]], widths: list[int] | tuple[int, ...]) -> list[str]:
    """The header row, a rule, the rows, a rule: each cell padded to its width, the cells past the
    widths (the notes) as they are."""
    lines = [
        "".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    rule = "-" * max(len(line) for line in lines)
    return [lines[0], rule, *lines[1:], rule]


def problems(found: list[str]) -> int:
    """Print each problem on stderr; the exit code (1 when there is any)."""
    for problem in found:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if found else 0
