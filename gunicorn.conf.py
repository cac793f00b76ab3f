"""gunicorn reads this file by itself when it starts in this folder (Procfile, README, `make bench`).

With PROMETHEUS_MULTIPROC_DIR set (core.metrics), each worker writes its metrics to files there; when
a worker exits, its live gauges must leave the scrape (its counters stay: they are history).
"""

import os


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
