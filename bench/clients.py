"""Load generators and API clients for the benchmarks, lean on CPU: they share the machine with
gunicorn and the database, so whatever they burn is taken from the figure they measure.

- Batched: pre-built bodies (made before the clock starts) sent over a few http.client
  connections from threads of this process; each response is parsed and checked.
- Single events: wrk with bench/singles.lua when wrk is installed (C and LuaJIT: next to no CPU),
  else a few processes each running a plain http.client loop.

Both ask for keep-alive; gunicorn's sync workers answer every request with `Connection: close`,
so in practice each request opens a new loopback TCP connection (http.client and wrk reconnect).
`Api` is one such connection for single JSON calls.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .data import EventFactory
from .report import percentile
from .server import ServerError

EVENTS_PATH = "/api/v1/events"
LUA_SCRIPT = Path(__file__).resolve().parent / "singles.lua"


def _headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


class Api:
    """One keep-alive-when-possible http.client connection to gunicorn, JSON in and out."""

    def __init__(self, port: int, secret: str):
        self.port = port
        self.headers = _headers(secret)
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):  # gunicorn's sync workers close every connection: reconnect once
            try:
                self.connection.request(method, path, body=payload, headers=self.headers)
                response = self.connection.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else {})
            except (OSError, http.client.HTTPException):
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
        got, answer = self.call(method, path, body)
        if got != status:
            raise ServerError(f"{method} {path} answered {got}: {answer}")
        return answer


# --- Batched ------------------------------------------------------------------------------------


@dataclass
class BatchRun:
    requests: int = 0
    accepted: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds per request
    failures: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.elapsed if self.elapsed else 0.0


def post_batches(
    *, port: int, secret: str, bodies: list[bytes], expected: list[int], connections: int
) -> BatchRun:
    """POST every body once over `connections` concurrent connections; checks that each answer is a
    200 whose `accepted` equals the expected count (no duplicates, conflicts or rejections)."""
    run = BatchRun()
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    headers = _headers(secret)

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    connection.request("POST", EVENTS_PATH, body=bodies[index], headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    with lock:
                        run.requests += 1
                        run.failures.append(f"request {index}: {type(exc).__name__}: {exc}")
                    continue
                latency = time.perf_counter() - started
                problem, accepted = None, 0
                if response.status != 200:
                    problem = f"HTTP {response.status}: {payload[:300]!r}"
                else:
                    answer = json.loads(payload)
                    accepted = answer.get("accepted", 0)
                    if accepted != expected[index]:
                        counts = {
                            key: answer.get(key)
                            for key in ("accepted", "duplicates", "conflicts", "rejected")
                        }
                        firsts = [r for r in answer.get("results", []) if r.get("status") != "accepted"][:2]
                        problem = f"expected {expected[index]} accepted, got {counts}; e.g. {firsts}"
                with lock:
                    run.requests += 1
                    run.accepted += accepted
                    run.latencies.append(latency)
                    if problem:
                        run.failures.append(f"request {index}: {problem}")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.elapsed = time.perf_counter() - started
    return run


# --- Single events ------------------------------------------------------------------------------


@dataclass
class SinglesRun:
    tool: str
    connections: int
    answered: int = 0
    ok: int = 0  # 200 with accepted == 1
    bad: int = 0
    window: float = 0.0  # seconds from the first request sent to the last response received
    latencies_us: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopped_by: str = ""

    @property
    def requests_per_second(self) -> float:
        return self.answered / self.window if self.window else 0.0

    def p(self, fraction: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.latencies_us, fraction) / 1000


def wrk_path(*, install: bool) -> str | None:
    """wrk, installing Debian's package first when allowed, running as root and apt-get exists."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("      (installing wrk: apt-get install -y wrk)", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False, **quiet).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False, **quiet)
    return shutil.which("wrk")


def singles_with_wrk(
    *,
    wrk: str,
    port: int,
    secret: str,
    prefix: str,
    total: int,
    connections: int,
    seconds: float,
    window: tuple[int, int],
    out_dir: Path,
    seed: int,
) -> SinglesRun:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("thread-*.txt"):
        old.unlink()
    cap = int(seconds) + 60  # wrk's own duration is only a backstop: the script stops each thread
    command = [
        wrk, "-t", str(connections), "-c", str(connections), "-d", f"{cap}s", "--timeout", "60s",
        "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}{EVENTS_PATH}",
        "--", prefix, str(total), str(seconds), str(window[0]), str(window[1]),
        str(out_dir), str(seed),
    ]  # fmt: skip
    env = {**os.environ, "MB_BENCH_API_KEY": secret}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    output: list[str] = []
    done = 0
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends when wrk exits: at the latest after `cap` seconds
            output.append(line.rstrip())
            if line.startswith("MB-THREAD-DONE"):
                done += 1
                if done == connections:
                    break
    finally:
        # Every thread has written its results; wrk itself would sleep until `cap`. Its summary is
        # not needed, so end it now (this also closes its idle reconnections to gunicorn).
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    run = SinglesRun(tool="wrk", connections=connections)
    starts, ends = [], []
    for tid in range(1, connections + 1):
        path = out_dir / f"thread-{tid}.txt"
        if not path.exists():
            run.failures.append(f"wrk thread {tid} did not finish; wrk said:\n" + "\n".join(output[-15:]))
            continue
        head, sample, *latencies = path.read_text().splitlines()
        answered, ok, bad, first_start, last_end = (int(value) for value in head.split())
        run.answered += answered
        run.ok += ok
        run.bad += bad
        run.latencies_us.extend(int(value) for value in latencies if value)
        if sample.strip():
            run.failures.append(f"wrk thread {tid}: first failure: {sample.strip()}")
        if answered:
            starts.append(first_start)
            ends.append(last_end)
    if starts:
        run.window = (max(ends) - min(starts)) / 1e6
    run.stopped_by = "deadline" if run.answered < total else "count"
    return run


def _single_loop(port: int, secret: str, prefix: str, quota: int, deadline: float, seed: int) -> dict:
    """One connection's loop for the Python fallback (runs in a process of its own)."""
    factory = EventFactory(prefix, seed=seed)
    headers = _headers(secret)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, ok, bad, sample = [], 0, 0, ""
    first_start = last_end = 0.0
    while len(latencies) < quota:
        body = json.dumps(factory.event(), separators=(",", ":")).encode()
        started = time.monotonic()
        try:
            connection.request("POST", EVENTS_PATH, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            good = response.status == 200 and b'"accepted":1,' in payload
            detail = f"{response.status} {payload[:300]!r}"
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            good, detail = False, f"{type(exc).__name__}: {exc}"
        last_end = time.monotonic()
        first_start = first_start or started
        latencies.append(int((last_end - started) * 1e6))
        ok += good
        bad += not good
        sample = sample or ("" if good else detail)
        if last_end >= deadline:
            break
    connection.close()
    return {
        "latencies": latencies,
        "ok": ok,
        "bad": bad,
        "sample": sample,
        "first": first_start,
        "last": last_end,
    }


def _single_process(pipe, *args) -> None:
    # Default signal handling in the child: the parent's SIGTERM handler is not for it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it ends the children
    try:
        pipe.send(_single_loop(*args))
    except Exception as exc:  # reported by the parent, not lost in a child's traceback
        pipe.send(
            {"latencies": [], "ok": 0, "bad": 0, "sample": f"client crashed: {exc!r}", "first": 0, "last": 0}
        )
    finally:
        pipe.close()


def singles_with_python(
    *, port: int, secret: str, prefix: str, total: int, connections: int, seconds: float, seed: int
) -> SinglesRun:
    """One forked process per connection (plain Process and Pipe: no pool machinery to hang); the
    caller closes its database connections before, since forked children inherit them."""
    context = multiprocessing.get_context("fork")
    deadline = time.monotonic() + seconds
    children = []
    for n in range(connections):
        receiver, sender = context.Pipe(duplex=False)
        quota = total // connections + (n < total % connections)
        args = (port, secret, f"{prefix}{n}-", quota, deadline, seed + n)
        process = context.Process(target=_single_process, args=(sender, *args), daemon=True)
        process.start()
        sender.close()
        children.append((process, receiver))
    results = []
    try:
        for _process, receiver in children:
            # Bounded: each child stops at its deadline; a request may then take up to its timeout.
            if receiver.poll(seconds + 90):
                results.append(receiver.recv())
            else:
                results.append(
                    {
                        "latencies": [],
                        "ok": 0,
                        "bad": 0,
                        "sample": "client did not answer",
                        "first": 0,
                        "last": 0,
                    }
                )
    finally:
        for process, receiver in children:
            receiver.close()
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    run = SinglesRun(tool="python http.client", connections=connections)
    for n, result in enumerate(results):
        run.answered += len(result["latencies"])
        run.ok += result["ok"]
        run.bad += result["bad"]
        run.latencies_us.extend(result["latencies"])
        if result["sample"]:
            run.failures.append(f"client {n}: first failure: {result['sample']}")
    active = [result for result in results if result["latencies"]]
    if active:
        run.window = max(r["last"] for r in active) - min(r["first"] for r in active)
    run.stopped_by = "deadline" if run.answered < total else "count"
    return run


@dataclass
class WrkSummary:
    """What wrk --latency prints at the end of a timed run, read back."""

    p50_ms: float
    p99_ms: float
    requests: int
    per_second: float


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_timed(wrk: str, url: str, *, connections: int, seconds: float, script: Path, env: dict | None = None) -> WrkSummary:
    """wrk for `seconds` (whole seconds: wrk takes no fractions) with its --latency summary;
    ServerError when wrk failed or saw answers other than 2xx/3xx."""
    command = [wrk, "-t", str(connections), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "--latency", "-s", str(script), url]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = result.stdout

    def figure(label: str) -> float:
        found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not found:
            raise ServerError(f"wrk printed no {label} latency:\n{out}{result.stderr}")
        return float(found.group(1)) * _WRK_UNITS[found.group(2)]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or result.returncode:
        raise ServerError(f"wrk: {bad.group(0) if bad else 'exit ' + str(result.returncode)}\n{out}{result.stderr}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return WrkSummary(figure("50%"), figure("99%"), requests, rate)
