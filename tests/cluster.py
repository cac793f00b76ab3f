"""Processes a test starts for itself, on free ports, and stops: a PostgreSQL primary and a
streaming replica (initdb + pg_basebackup), PgBouncer, Redis. Never the machine's own services.

PostgreSQL and PgBouncer refuse to run as root: when the tests do, they run as `postgres`, in a
folder under /tmp that user owns (pytest's own tmp folders are closed to it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql") / (sorted(os.listdir("/usr/lib/postgresql"))[-1] if Path("/usr/lib/postgresql").exists() else "15") / "bin"
PGBOUNCER = "/usr/sbin/pgbouncer"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode} before listening on {port}") from None
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {seconds:.0f} s")


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def scratch_folder(prefix: str) -> Path:
    """A folder the postgres user may use (owned by it when the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


@dataclass
class Postgres:
    """A PostgreSQL server of the test's own: a primary (`initdb`), or a streaming replica of one
    (`pg_basebackup -R`)."""

    folder: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        subprocess.run(_as_postgres(list(command)), check=True, capture_output=True, timeout=120)

    def init_primary(self) -> Postgres:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = on\n")
        return self

    def init_replica_of(self, primary: Postgres) -> Postgres:
        self._run(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                  "-D", str(self.data), "-R", "-X", "stream")  # fmt: skip
        return self

    def start(self) -> Postgres:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log.txt"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60, check=False)  # fmt: skip
        if not (self.data / "postmaster.pid").exists():  # stopped: its 60 MB under /tmp go too
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class PgBouncer:
    """PgBouncer in transaction pooling mode in front of `host:port`, with a pool of `pool_size`."""

    target_port: int
    pool_size: int = 2
    port: int = field(default_factory=free_port)
    folder: Path | None = None
    process: subprocess.Popen | None = None

    def start(self) -> PgBouncer:
        self.folder = scratch_folder("mb-pgbouncer-")
        (self.folder / "users.txt").write_text('"postgres" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.target_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.folder / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {self.pool_size}\nmax_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            "admin_users = postgres\n"  # its console (database `pgbouncer`): SHOW POOLS when a test fails
            f"logfile = {self.folder / 'pgbouncer.log'}\n"
        )
        for path in self.folder.iterdir():
            path.chmod(0o644)
        command = [PGBOUNCER, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "postgres"]  # it refuses to run as root
        # In the foreground pgbouncer writes every log line to stderr too (a line per client login
        # and logout), and it is one thread: were its output a pipe nobody reads, it would block in
        # write() once 64 KiB were pending and stop serving everyone. That was the cluster test's
        # hang. A file never fills up; it keeps what pgbouncer says before its logfile is open.
        with (self.folder / "stderr.txt").open("wb") as output:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.process, seconds=15)
        except RuntimeError as exc:
            raise RuntimeError(f"pgbouncer did not start: {exc}\n{self.log()}") from None
        return self

    def log(self) -> str:
        """What it has said: its stderr before the logfile opened, then the logfile."""
        assert self.folder is not None
        return "".join(path.read_text(errors="replace") for path in (self.folder / "stderr.txt", self.folder / "pgbouncer.log")
                       if path.exists())  # fmt: skip

    def show(self, what: str) -> list[tuple]:
        """`SHOW POOLS`, `SHOW CLIENTS`… from its console, waiting at most 3 s (it may be the one stuck)."""
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer", autocommit=True,
                             connect_timeout=3) as console:  # fmt: skip
            cursor = console.execute(f"SHOW {what}")
            return [tuple(column.name for column in cursor.description), *cursor.fetchall()]

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Redis:
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> Redis:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, self.process)
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
