"""Where a benchmark runs: its database (chosen, created, migrated), its Redis, the environment of
its processes (production-like settings) and its scratch folder.

The database is DATABASE_URL when set; else `meterboard_bench` on the local PostgreSQL when it
answers (created if missing); else a SQLite file under the scratch folder (figures that say nothing
about the PostgreSQL targets). The development and test databases (`meterboard`,
`test_meterboard`) are refused, except a `test_*` database named in MB_BENCH_ALLOW_DATABASE: the
smoke test's (tests/test_bench_smoke.py), which pytest empties after each test.

The scratch folder (logs, wrk's files, the SQLite fallback) is var/bench/, or MB_BENCH_VAR_DIR.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/meterboard_bench"
# The development and test databases: a benchmark never writes there.
PROTECTED_DATABASES = frozenset({"meterboard", "test_meterboard"})
ALLOW_VARIABLE = "MB_BENCH_ALLOW_DATABASE"
BENCH_REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own (tests use 15)


class DatabaseError(RuntimeError):
    pass


class NeedsPostgres(DatabaseError):
    """A PostgreSQL-only benchmark found no PostgreSQL to run on (the message says what to set)."""


@dataclass
class Target:
    url: str
    vendor: str  # "postgresql" or "sqlite"
    name: str
    note: str = ""  # how it was chosen (shown in the header)


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def masked(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _vendor(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme.startswith("postgres") or scheme == "pgsql":
        return "postgresql"
    if scheme.startswith("sqlite"):
        return "sqlite"
    return scheme


def _admin_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(_admin_url(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _ensure_postgres_database(url: str, *, fresh: bool = False) -> bool:
    """Create the database if missing (dropped first when `fresh`); True when it was created."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    if name in PROTECTED_DATABASES:  # belt and braces: only ever the bench's own database
        raise DatabaseError(f"Refusing to create or drop {name!r}.")
    with psycopg.connect(_admin_url(url), connect_timeout=5, autocommit=True) as admin:
        if fresh:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _allowed(name: str) -> bool:
    """A protected database the caller allows by name: only pytest's throwaway test_* database."""
    return name.startswith("test_") and os.environ.get(ALLOW_VARIABLE) == name


def choose(environ_url: str | None, var_dir: Path, *, fresh: bool = False,
           default_url: str = DEFAULT_POSTGRES_URL) -> Target:
    """DATABASE_URL when set; else `default_url` (meterboard_bench) on the local PostgreSQL when it
    answers (created if missing; dropped and created again when `fresh`); else a SQLite file under
    `var_dir` (deleted first when `fresh`)."""
    if environ_url:
        if fresh:
            raise DatabaseError(
                "--fresh-db only drops the bench's own database: unset DATABASE_URL to use it."
            )
        target = Target(environ_url, _vendor(environ_url), database_name(environ_url), "from DATABASE_URL")
    elif _postgres_answers(default_url):
        created = _ensure_postgres_database(default_url, fresh=fresh)
        note = "local PostgreSQL, database created" if created else "local PostgreSQL"
        target = Target(default_url, "postgresql", database_name(default_url), note)
    else:
        path = var_dir / "bench.sqlite3"
        if fresh:
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
        target = Target(
            f"sqlite:///{path}", "sqlite", str(path), "PostgreSQL does not answer at 127.0.0.1:5432"
        )
    if target.vendor == "postgresql" and target.name in PROTECTED_DATABASES and not _allowed(target.name):
        raise DatabaseError(
            f"Refusing to benchmark on the database {target.name!r} (development/test data). Point "
            f"DATABASE_URL at a scratch database, or unset it to use {database_name(DEFAULT_POSTGRES_URL)}."
        )
    if target.vendor not in ("postgresql", "sqlite"):
        raise DatabaseError(f"Unsupported database in DATABASE_URL: {masked(target.url)}")
    return target


def add_fresh_db(parser) -> None:
    """--fresh-db, for the benchmarks that choose the database first (ingest, close)."""
    parser.add_argument("--fresh-db", action="store_true",
                        help="drop and re-create the bench's own database first (not one named by DATABASE_URL)")  # fmt: skip


def scratch_dir() -> Path:
    """var/bench/ (or MB_BENCH_VAR_DIR), created: logs, wrk's files, the SQLite fallback."""
    path = Path(os.environ.get("MB_BENCH_VAR_DIR") or BASE_DIR / "var" / "bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def redis_url() -> str:
    """REDIS_URL when set (even empty: no Redis); else database 12 of the local Redis when it
    answers; else "" (the embedded broker)."""
    if "REDIS_URL" in os.environ:
        return os.environ["REDIS_URL"]
    import redis

    try:
        redis.Redis.from_url(BENCH_REDIS_URL, socket_connect_timeout=2).ping()
        return BENCH_REDIS_URL
    except (redis.RedisError, OSError):
        return ""


def environment(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of the bench's processes (and of its own Django): production-like
    settings (DEBUG unset, a fresh SECRET_KEY), the bench's database and scratch folder."""
    env = {name: value for name, value in os.environ.items() if name != "DEBUG"}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=f"bench-{secrets.token_urlsafe(50)}",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SITE_URL="http://127.0.0.1",
        DJANGO_SETTINGS_MODULE="config.settings",
        MB_VAR_DIR=str(var_dir),
        **extra,
    )
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run manage.py with the bench environment; its stdout, or DatabaseError with its output."""
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise DatabaseError(f"manage.py {' '.join(args)} failed:\n" + "\n".join(output[-25:]))
    return result.stdout


@dataclass
class Bench:
    """A benchmark's place: its database, the environment of its processes, its scratch folder."""

    target: Target
    env: dict[str, str]
    var_dir: Path

    @property
    def vendor(self) -> str:
        return self.target.vendor

    @property
    def postgres(self) -> str | None:
        """The PostgreSQL database's name (for the CPU accounting); None on SQLite."""
        return self.target.name if self.target.vendor == "postgresql" else None

    @property
    def where(self) -> str:
        return masked(self.target.url) if self.target.vendor == "postgresql" else self.target.name

    def manage(self, *args: str, timeout: float = 600) -> str:
        return manage(self.env, *args, timeout=timeout)

    def migrate(self) -> int:
        """`manage.py migrate`; the number of migrations applied."""
        output = self.manage("migrate", "--noinput")
        return sum(1 for line in output.splitlines() if line.strip().startswith("Applying"))

    def activate(self) -> None:
        """This process's environment becomes the bench's, and Django is set up on it."""
        for name in set(os.environ) - set(self.env):
            del os.environ[name]
        os.environ.update(self.env)
        django_setup()


def select(*, fresh: bool = False, **extra: str) -> Bench:
    """Choose the database (creating the bench's own if needed) and build the environment."""
    var_dir = scratch_dir()
    target = choose(os.environ.get("DATABASE_URL"), var_dir, fresh=fresh)
    return Bench(target, environment(target.url, var_dir, **extra), var_dir)


def select_postgres(database: str, *, reset: bool = False, **extra: str) -> Bench:
    """For the benchmarks that need PostgreSQL: DATABASE_URL when set (it must name PostgreSQL, and
    is never dropped), else `database` on the local PostgreSQL (dropped and created again when
    `reset`). NeedsPostgres, saying what to set, when there is none: never a SQLite file."""
    url = os.environ.get("DATABASE_URL")
    own = urlunsplit(urlsplit(DEFAULT_POSTGRES_URL)._replace(path=f"/{database}"))
    if url and _vendor(url) != "postgresql":
        raise NeedsPostgres(f"This benchmark runs on PostgreSQL only, and DATABASE_URL names {_vendor(url)} "
                            f"({masked(url)}): set DATABASE_URL=postgres://USER@HOST:5432/DATABASE (a scratch "
                            f"database), or unset it to use {database} on the local PostgreSQL.")
    if not url and not _postgres_answers(own):
        raise NeedsPostgres("This benchmark runs on PostgreSQL only, and none answers at 127.0.0.1:5432: set "
                            "DATABASE_URL=postgres://USER@HOST:5432/DATABASE (a scratch database).")
    var_dir = scratch_dir()
    target = choose(url, var_dir, fresh=reset and not url, default_url=own)
    return Bench(target, environment(target.url, var_dir, **extra), var_dir)


def drop_own_database(target: Target) -> bool:
    """Drop the bench's own database (one it chose, never DATABASE_URL's): True when dropped."""
    if target.note.startswith("from DATABASE_URL") or target.vendor != "postgresql":
        return False
    import psycopg
    from psycopg import sql

    if target.name in PROTECTED_DATABASES:
        raise DatabaseError(f"Refusing to drop {target.name!r}.")
    close_connections()
    with psycopg.connect(_admin_url(target.url), connect_timeout=5, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.name)))
    return True


def django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def close_connections() -> None:
    from django.db import connections

    connections.close_all()

