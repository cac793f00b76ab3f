"""Where the CPU went during a phase (Linux /proc): gunicorn's processes, PostgreSQL's processes,
the load generator, and everything else on the machine, which competes for the same cores and
makes the figures noisy when it is busy. Elsewhere than Linux, nothing is measured (but the number
of cores)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return (PROC / "stat").exists()


def cores() -> int:
    """The cores this process may run on (the figures' denominator: 2 on the reference machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ... utime stime ...": comm may hold spaces, so split after ')'.
    open_paren, close_paren = text.find("("), text.rfind(")")
    return text[open_paren + 1 : close_paren], text[close_paren + 2 :].split()


def _seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _postgres_serves(pid: int, database: str) -> bool:
    """Whether a postgres process works for the bench: the postmaster and the shared background
    processes do; a backend or autovacuum worker only when it is on the bench's database (another
    database's activity, e.g. a test suite running meanwhile, counts as 'other')."""
    try:
        title = (
            (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        )
    except OSError:
        return False
    if not title.startswith("postgres: "):
        return True  # the postmaster
    words = title.split(": ", 2)[-1].split()  # after "postgres: <cluster>: "
    if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
        return words[1] == database  # client backend: user database host(port) state
    if words[:2] == ["autovacuum", "worker"]:
        return words[-1] == database
    return True


def _processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (comm, ppid, cpu seconds) for every process."""
    table = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parsed = _stat_fields(int(entry.name))
            if parsed:
                comm, fields = parsed
                table[int(entry.name)] = (comm, int(fields[1]), _seconds(fields))
    return table


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(value) for value in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (total - idle) / TICKS, total / TICKS


def busy_share(seconds: float = 1.0) -> float | None:
    """How busy the machine is right now (0..1), sampled over `seconds`; None off Linux."""
    if not available():
        return None
    busy_before, total_before = _machine_busy()
    time.sleep(seconds)
    busy_after, total_after = _machine_busy()
    return (busy_after - busy_before) / max(total_after - total_before, 1e-9)


@dataclass
class Snapshot:
    server: float
    database: float
    client: float
    busy: float
    total: float


def snapshot(server_pid: int | None, database: str | None) -> Snapshot | None:
    """CPU seconds so far; `database`: the PostgreSQL database of the bench (None on SQLite, which
    works inside gunicorn's processes)."""
    if not available():
        return None
    table = _processes()
    server = 0.0
    if server_pid is not None:
        tree = {server_pid}
        for _ in range(3):  # gunicorn: master -> workers
            tree |= {pid for pid, (_, ppid, _) in table.items() if ppid in tree}
        server = sum(table[pid][2] for pid in tree if pid in table)
    postgres = sum(
        seconds
        for pid, (comm, _, seconds) in table.items()
        if database and comm == "postgres" and _postgres_serves(pid, database)
    )
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk / client processes, once reaped
    client = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    busy, total = _machine_busy()
    return Snapshot(server, postgres, client, busy, total)


@dataclass
class Usage:
    """CPU seconds spent in a phase, and the machine's capacity over it (cores x wall seconds)."""

    server: float
    database: float
    client: float
    other: float
    capacity: float
    wall: float

    def share(self, seconds: float) -> str:
        return f"{100 * seconds / self.capacity:.0f}%" if self.capacity else "?"

    def describe(self, count: int, scale: int, unit: str, *, postgres: bool = True) -> str:
        """CPU milliseconds per `scale` units of work (count units were done), and how busy the
        machine was: e.g. 'CPU per 1,000 events: gunicorn 95 ms, postgres 30 ms, ...'. On SQLite
        the database works inside gunicorn's processes, so it has no figure of its own."""
        per = scale * 1000 / count if count else 0.0
        busy = self.server + self.database + self.client + self.other
        cores = self.capacity / self.wall if self.wall else 0
        server = f"gunicorn {self.server * per:.1f} ms" + ("" if postgres else " (incl. SQLite)")
        database = f", postgres {self.database * per:.1f} ms" if postgres else ""
        return (
            f"CPU per {scale:,} {unit}: {server}{database}, load generator {self.client * per:.1f} ms; "
            f"{cores:.0f} cores {self.share(busy)} busy, {self.share(self.other)} by other processes"
        )


def combined(usages: list[Usage]) -> Usage | None:
    """The usages of several phases as one (their sums)."""
    if not usages:
        return None
    return Usage(*(sum(getattr(u, name) for u in usages) for name in ("server", "database", "client", "other",
                                                                       "capacity", "wall")))  # fmt: skip


def usage(before: Snapshot | None, after: Snapshot | None, wall: float) -> Usage | None:
    if before is None or after is None:
        return None
    server = max(0.0, after.server - before.server)
    database = max(0.0, after.database - before.database)
    client = max(0.0, after.client - before.client)
    busy = max(0.0, after.busy - before.busy)
    capacity = max(0.0, after.total - before.total)
    return Usage(server, database, client, max(0.0, busy - server - database - client), capacity, wall)
