#!/usr/bin/env python
"""Pick the services the test suite runs on; print `export` lines for the shell to eval.

PostgreSQL and Redis on 127.0.0.1 are used when they answer (and must, when CI=true); otherwise
the suite runs on SQLite with the embedded broker. An explicit DATABASE_URL / REDIS_URL wins;
MB_TEST_SQLITE=1 forces SQLite and no Redis.
"""

from __future__ import annotations

import os
import shlex
import sys

PG_URL = "postgres://postgres@127.0.0.1:5432/meterboard"
REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own: tests may flush it


def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def main() -> int:
    ci = os.environ.get("CI", "").lower() == "true"
    exports: dict[str, str] = {}
    if os.environ.get("MB_TEST_SQLITE") == "1":
        exports = {"DATABASE_URL": "", "REDIS_URL": ""}
    else:
        database_url = os.environ.get("DATABASE_URL") or PG_URL
        redis_url = os.environ.get("REDIS_URL") or REDIS_URL
        if database_url.startswith("postgres") and not postgres_answers(database_url):
            if ci:
                print(f"CI=true but PostgreSQL does not answer at {database_url}; start it:\n"
                      "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                      file=sys.stderr)
                return 1
            database_url = ""
        if not redis_answers(redis_url):
            if ci:
                print(f"CI=true but Redis does not answer at {redis_url}; start it:\n"
                      '  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
                      file=sys.stderr)
                return 1
            redis_url = ""
        exports = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    database = exports["DATABASE_URL"].split("://")[0] or "sqlite"
    print(f"==> Tests run on {database}, {'Redis' if exports['REDIS_URL'] else 'no Redis (embedded broker)'}",
          file=sys.stderr)
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
