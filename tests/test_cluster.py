"""The simulated cluster (issue 13), on processes this test starts itself: a PostgreSQL primary and
a streaming replica (initdb + pg_basebackup), PgBouncer in transaction mode in front of the
primary, Redis, two gunicorn nodes reading from the replica where they may, two workers and two
beats, and localstripe. Clients spread single events and batches over both nodes, retrying on
connection errors and 5xx, while one web node, one worker and one beat are killed (SIGKILL) and
started again: the worker while it runs last month's close and is charging, with the beat that
holds the schedule's lock; then the node, at least 1.5 s into the traffic, mid-request. Then:

- every event is stored once, the rollups equal the events, and every answer was truthful (an
  event answered `accepted` twice would be a double count);
- each threshold of a budget the traffic crosses (webhook to a local receiver, and e-mail) is
  recorded once and delivered once on each channel: one delivery id per alert and channel at
  the receiver, repeated only after an attempt cut short by the killed worker (delivery is at
  least once, README), and only with that id;
- last month, closed by two runs at once (the job sent twice, as by two beats), one of them
  killed while it charges: one finalized statement and one successful PaymentIntent of its
  amount per workspace-month (a charge cut short is reconciled by the every-minute job once its
  lease ends, which is most of this test's 3 to 4 minutes);
- the replica caught up, and the usage API and the dashboard (a person signed in, past the
  moment their own write pins them to the primary) were served from it.

An intermittent hang (3 runs of 10, while this test was opt-in) was the harness's: PgBouncer ran
with its stderr piped to this process, which never read it. It logs every client's login and
logout there (a Celery worker opens a connection per task), so after 64 KiB it blocked in write()
(/proc/<pid>/wchan: anon_pipe_write) and, one thread serving everyone, stopped answering both
nodes while PostgreSQL showed every session idle. tests/cluster.py now sends it to a file."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from celery import Celery
from django.utils import timezone

from bench.server import Gunicorn
from budgets.webhooks import signature_verify
from core.periods import current_period, previous_month
from tests.budgets.conftest import receiver, subjects_in, wait_until  # noqa: F401 (receiver: a fixture, used by name)
from tests.cluster import PG_BIN, PGBOUNCER, PgBouncer, Postgres, Redis, scratch_folder
from tests.faults import TcpProxy
from tests.stripe_server import SECRET_KEY as STRIPE_KEY

ROOT = Path(__file__).resolve().parents[1]
CELERY = str(Path(sys.executable).with_name("celery"))
DATABASE = "meterboard_cluster"
THREADS, SINGLES, BATCHES, BATCH = 4, 150, 10, 100
CLOSING = 8  # workspaces with a card and usage last month, besides the one the traffic goes to
CLOSE_TASK = "billing.tasks.period_close_and_charge_previous_month"
# The traffic: 1,600 sd15 images at $0.004 (30 steps, 512×512) = $6.40 this month. The budget's
# thresholds are crossed through it, around the kills.
BUDGET = {"amount": "6.00", "thresholds": [25, 50, 75, 100], "forecast_alerts": False, "email": True}
ALERTS_WITHIN = 120  # seconds after the kills (README: an alert whose worker died arrives within 2 minutes)
PAID_WITHIN = 150  # a charge's lease (52 s with STRIPE_TIMEOUT_SECONDS=5) and the next minute's retry job

pytestmark = pytest.mark.slow

# The workspaces and their keys; and last month's usage of each, received last month (usage
# received after its month ended is late, billed with the month it arrives in: so through the
# service, which takes the time of receipt, not the API). $2.00 each: 500 sd15 images.
SETUP = """
import json
from datetime import datetime, timezone
from django.contrib.auth import get_user_model
from usage.services import events_ingest
from workspaces.services import api_key_create, workspace_create

slugs, month = {slugs!r}, "{month:%Y-%m}"
received = datetime.fromisoformat(month + "-28T12:00:00+00:00")
secrets = {{}}
for slug in slugs:
    workspace = workspace_create(slug=slug, owner_email=slug + "@test.example")
    issued = api_key_create(workspace=workspace, name="cluster")
    secrets[slug] = issued.secret
    usage = {{"event_id": "last-month", "occurred_at": month + "-15T12:00:00Z", "feature": "generation",
              "model": "sd15", "steps": 30, "width": 512, "height": 512, "quantity": 500}}
    [result] = events_ingest(workspace=workspace, api_key=issued.api_key, raw_events=[usage], now=received).results
    assert result.status == "accepted", result
owner = get_user_model().objects.get(email="cluster@test.example")
owner.set_password("{password}")
owner.save()
print("SECRETS " + json.dumps(secrets))
"""
PASSWORD = "cluster-owner-pass-1"


def needed() -> None:
    missing = [what for what, path in (("PostgreSQL", PG_BIN / "initdb"), ("pgbouncer", Path(PGBOUNCER)))
               if not os.access(path, os.X_OK)]  # fmt: skip
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing for the cluster test: {', '.join(missing)} (.ci/run installs them)")
        pytest.skip(f"missing: {', '.join(missing)}")


def manage(env: dict, *args: str) -> str:
    run = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


def call(port: int, secret: str, method: str, path: str, body=None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body).encode(),
                           headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})  # fmt: skip
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def post(port: int, secret: str, body) -> tuple[int, dict]:
    return call(port, secret, "POST", "/api/v1/events", body)


def query(url: str, sql: str, params=None):
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True, connect_timeout=5) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def event(event_id: str) -> dict:
    return {"event_id": event_id, "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "feature": "generation", "model": "sd15", "steps": 30, "width": 512, "height": 512}  # fmt: skip


class Fleet:
    """Celery workers and beats of the cluster, each restartable, each logging to <name>.log."""

    def __init__(self, env: dict, folder: Path):
        self.env, self.folder, self.processes = env, folder, {}

    def start(self, name: str, *args: str) -> None:
        log = (self.folder / f"{name}.log").open("a")
        self.processes[name] = subprocess.Popen([CELERY, "-A", "config", *args], cwd=ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def worker(self, name: str) -> None:
        self.start(name, "worker", "-Q", "celery,webhooks", "--concurrency=1", "--loglevel=INFO", "-n",
                   f"{name}-{os.getpid()}@localhost", "--without-gossip", "--without-mingle")  # fmt: skip

    def beat(self, name: str) -> None:
        self.start(name, "beat", "--loglevel=INFO", "-s", str(self.folder / f"{name}-schedule"))

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def alive(self, prefix: str) -> list[str]:
        return [name for name, process in self.processes.items() if name.startswith(prefix) and process.poll() is None]

    def kill(self, name: str) -> None:
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_a_cluster_stores_every_event_once_alerts_once_and_charges_once_while_a_node_a_worker_and_a_beat_die(
    tmp_path, receiver, localstripe_server  # noqa: F811 (receiver: the fixture imported above)
):
    needed()
    localstripe_server.reset()
    period_end = current_period(timezone.now())  # this month: the traffic's
    period = previous_month(period_end)  # last month: the close's
    primary = replica = bouncer = redis = fleet = sender = stripe = None
    nodes: list[Gunicorn] = []
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    try:
        primary = Postgres(scratch_folder("mb-primary-")).init_primary().start()
        query(primary.url("postgres"), f"CREATE DATABASE {DATABASE}")
        replica = Postgres(scratch_folder("mb-replica-")).init_replica_of(primary).start()
        redis = Redis().start()
        bouncer = PgBouncer(primary.port, pool_size=4).start()
        stripe = TcpProxy(localstripe_server.port).start()  # slowed down for the close, below
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "DATABASE_URL": bouncer.url(DATABASE),
            "DATABASE_TRANSACTION_POOLING": "1",
            "DATABASE_REPLICA_URLS": replica.url(DATABASE),
            "REDIS_URL": redis.url(0),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "MB_REDBEAT_PREFIX": "mb:redbeat:cluster",
            "BEAT_LOCK_SECONDS": "5",
            "STRIPE_API_BASE": stripe.url,
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_TIMEOUT_SECONDS": "5",  # a charge cut short is reconciled 52 s later (its lease)
            "WEBHOOK_ALLOW_PRIVATE": "1",  # the receiver is on 127.0.0.1
            "MB_TEST_EMAIL_DIR": str(mail_dir),
        }
        manage({**env, "DATABASE_URL": primary.url(DATABASE)}, "migrate", "--noinput")
        slugs = ["cluster", *(f"closing-{n}" for n in range(1, CLOSING + 1))]
        out = manage(env, "shell", "-c", SETUP.format(slugs=slugs, month=period, password=PASSWORD))
        keys = json.loads(next(line for line in out.splitlines() if line.startswith("SECRETS "))[len("SECRETS "):])
        secret = keys["cluster"]

        nodes = [Gunicorn(env=env, workers=2, log_path=tmp_path / f"node-{n}.log", ready_path="/healthz")
                 for n in (0, 1)]  # fmt: skip
        for node in nodes:
            node.start()
        fleet = Fleet(env, tmp_path)
        for n in (0, 1):
            fleet.worker(f"worker-{n}")
            fleet.beat(f"beat-{n}")

        # Every workspace: a card; the traffic's, a budget.
        customers = {}
        for n, slug in enumerate(slugs):
            status, answer = call(nodes[n % 2].port, keys[slug], "POST", "/api/v1/billing/payment-method",
                                  {"payment_method": "pm_card_visa"})  # fmt: skip
            assert status == 200, answer
            customers[slug] = answer["customer"]
        status, budget = call(nodes[0].port, secret, "POST", "/api/v1/budgets",
                              {**BUDGET, "webhooks": [{"url": receiver.url("/cluster")}]})  # fmt: skip
        assert status == 201, budget
        webhook_secret = budget["webhooks"][0]["secret"]

        ports = [node.port for node in nodes]  # read by the clients at each try: a restarted node moves
        answers: list[tuple[str, str]] = []  # (event_id, status) of every 200 answer
        failures: list[str] = []
        lock = threading.Lock()

        def send(body, attempt_node: int) -> None:
            for attempt in range(30):
                port = ports[(attempt_node + attempt) % len(ports)]
                try:
                    status, answer = post(port, secret, body)
                except OSError:
                    time.sleep(0.1)
                    continue
                if status == 200:
                    with lock:
                        answers.extend((result["event_id"], result["status"]) for result in answer["results"])
                    return
                if status < 500 and status != 429:
                    failures.append(f"{status} {answer}")
                    return
                time.sleep(0.1)
            failures.append(f"gave up on {str(body)[:80]}")

        def singles(number: int) -> None:
            for n in range(SINGLES):
                send(event(f"s{number}-{n}"), n + number)

        def batches() -> None:
            for n in range(BATCHES):
                send({"events": [event(f"b{n}-{k}") for k in range(BATCH)]}, n)

        clients = [threading.Thread(target=singles, args=(number,)) for number in range(THREADS)]
        clients.append(threading.Thread(target=batches))
        # A worker dies in the middle of the close: one running it once it is charging (a payment
        # attempt saved), with statements still to pay.
        def running_the_close(name: str) -> bool:
            log = fleet.log(name)
            received = re.findall(rf"{CLOSE_TASK}\[([^]]+)\] received", log)
            return bool(set(received) - set(re.findall(rf"{CLOSE_TASK}\[([^]]+)\] (?:succeeded|raised|retry)", log)))

        def charging() -> list[str]:
            attempts = query(primary.url(DATABASE), "SELECT count(*) FROM billing_paymentattempt a JOIN billing_statement s "
                             "ON s.id = a.statement_id WHERE s.period = %s", [period])[0][0]  # fmt: skip
            return attempts and [name for name in fleet.alive("worker-") if running_the_close(name)]

        started = time.monotonic()
        deadline_clients = started + 150
        for client in clients:
            client.start()
        # Last month's close, sent twice at once (two beats, or two nodes' operators): two runs,
        # overlapping on most statements, each Stripe call taking a while (the charges of nine
        # workspaces take seconds, not a blink), so that a worker can be killed mid-way.
        stripe.latency = 0.5
        sender = Celery("cluster-test", broker=redis.url(0))
        for _ in range(2):
            sender.send_task(CLOSE_TASK)
        victim = wait_until(charging, 60, "a worker charging last month")[0]
        paid_at_kill = query(primary.url(DATABASE), "SELECT count(*) FROM billing_statement WHERE period = %s "
                             "AND status = 'paid'", [period])[0][0]  # fmt: skip
        # …and the beat running the schedule (the one holding the lock), at the same moment.
        beats = fleet.alive("beat-")
        running_beat = next((name for name in beats if "beat: Acquired lock" in fleet.log(name)), beats[0])
        fleet.kill(victim)
        fleet.kill(running_beat)
        killed_at = time.monotonic()
        assert paid_at_kill < len(slugs)  # the close was killed mid-way
        time.sleep(max(0.0, started + 1.5 - time.monotonic()))
        os.killpg(nodes[0].process.pid, signal.SIGKILL)  # a web node dies mid-request
        nodes[0].process.wait(10)
        nodes[0].process = None
        restarted = Gunicorn(env=env, workers=2, log_path=tmp_path / "node-0b.log", ready_path="/healthz")
        restarted.start()
        nodes[0] = restarted
        ports[0] = restarted.port
        fleet.worker(f"{victim}b")
        fleet.beat(f"{running_beat}b")
        for client in clients:
            client.join(max(1.0, deadline_clients - time.monotonic()))
        if [client for client in clients if client.is_alive()]:
            activity = query(primary.url("postgres"), "SELECT pid, datname, state, wait_event_type, wait_event, "
                             "left(query, 120), now() - xact_start FROM pg_stat_activity WHERE backend_type = 'client backend'")  # fmt: skip
            try:
                pools = bouncer.show("POOLS")
            except Exception as exc:  # noqa: BLE001 (a stuck pgbouncer is what this would show)
                pools = [f"pgbouncer's console does not answer: {exc}"]
            pytest.fail("clients still running; the primary's sessions:\n" + "\n".join(map(str, activity))
                        + "\npgbouncer's pools:\n" + "\n".join(map(str, pools)) + "\n" + bouncer.log()[-3000:])  # fmt: skip
        assert failures == []

        # Every event stored once, the rollups equal to the events.
        sent = {f"s{t}-{n}" for t in range(THREADS) for n in range(SINGLES)}
        sent |= {f"b{n}-{k}" for n in range(BATCHES) for k in range(BATCH)}
        accepted = Counter(event_id for event_id, status in answers if status == "accepted")
        assert set(accepted) <= sent and max(accepted.values()) == 1  # never accepted twice
        assert {event_id for event_id, _ in answers} == sent  # every event answered
        traffic = "workspace_id = (SELECT id FROM workspaces_workspace WHERE slug = 'cluster')"  # this month's
        rows = query(primary.url(DATABASE), "SELECT count(*), count(DISTINCT event_id), coalesce(sum(amount * 1000000), 0)::bigint "
                     f"FROM usage_usageevent WHERE {traffic} AND occurred_at >= %s", [period_end])  # fmt: skip
        rollups = query(primary.url(DATABASE), "SELECT coalesce(sum(events), 0), coalesce(sum(amount_micros), 0) "
                        f"FROM usage_dailyrollup WHERE {traffic} AND day >= %s", [period_end])  # fmt: skip
        assert rows[0][0] == rows[0][1] == len(sent)
        assert (rollups[0][0], rollups[0][1]) == (len(sent), rows[0][2])

        # Each alert delivered once on each channel, despite the killed worker and beat.
        # Settled once every threshold has its alert (the spend crossed them all) and every delivery
        # is delivered: not merely once the alerts recorded so far are, which a loaded machine can
        # reach before the evaluation that records the later thresholds has run.
        def settled():
            open_ = query(primary.url(DATABASE), "SELECT count(*) FROM budgets_alertdelivery WHERE status <> 'delivered'")
            recorded = query(primary.url(DATABASE), "SELECT count(DISTINCT threshold) FROM budgets_alert "
                             f"WHERE budget_id = {budget['id']} AND kind = 'actual'")  # fmt: skip
            return open_[0][0] == 0 and recorded[0][0] == len(BUDGET["thresholds"])

        wait_until(settled, max(1.0, killed_at + ALERTS_WITHIN - time.monotonic()), "every alert delivered")
        alerts = query(primary.url(DATABASE), "SELECT a.threshold, d.channel, d.id, count(t.id) FILTER (WHERE t.outcome <> 'ok') "
                       "FROM budgets_alert a JOIN budgets_alertdelivery d ON d.alert_id = a.id "
                       "LEFT JOIN budgets_deliveryattempt t ON t.delivery_id = d.id "
                       f"WHERE a.budget_id = {budget['id']} AND a.kind = 'actual' GROUP BY 1, 2, 3")  # fmt: skip
        assert sorted((threshold, channel) for threshold, channel, _, _ in alerts) == sorted(
            (threshold, channel) for threshold in BUDGET["thresholds"] for channel in ("email", "webhook")
        )  # one alert per threshold, one delivery per channel
        posts = receiver.on("/cluster")
        assert all(signature_verify(webhook_secret, item.headers["Meterboard-Signature"], item.body, now=item.at)
                   for item in posts)  # fmt: skip
        by_delivery = Counter(int(item.headers["Meterboard-Delivery"]) for item in posts)
        subjects = Counter(subjects_in(mail_dir))
        for threshold, channel, delivery, cut_short in alerts:
            if channel == "webhook":
                # Sent once; again (with its id) only after an attempt the killed worker cut short.
                assert 1 <= by_delivery.pop(delivery) <= 1 + cut_short, (threshold, by_delivery, cut_short)
                assert {item.json["threshold"] for item in posts
                        if item.headers["Meterboard-Delivery"] == str(delivery)} == {threshold}  # fmt: skip
            else:
                [subject] = [subject for subject in subjects if f" {threshold}% " in subject]
                assert 1 <= subjects.pop(subject) <= 1 + cut_short, (threshold, subject, cut_short)
        assert by_delivery == {}  # no other webhook
        assert all("budget" not in subject for subject in subjects), subjects  # no other budget e-mail

        # One finalized statement and one charge per workspace-month, despite two runs and a death.
        def all_paid():
            statements = query(primary.url(DATABASE), "SELECT w.slug, s.status, s.amount_due_cents FROM billing_statement s "
                               "JOIN workspaces_workspace w ON w.id = s.workspace_id WHERE s.period = %s", [period])  # fmt: skip
            return statements if sorted(s[0] for s in statements) == sorted(slugs) and all(
                s[1] == "paid" for s in statements) else None  # fmt: skip

        statements = wait_until(all_paid, max(1.0, killed_at + PAID_WITHIN - time.monotonic()),
                                "every statement of last month paid")
        for slug, _, amount_due_cents in statements:
            assert amount_due_cents > 0
            intents = localstripe_server.payment_intents(customer=customers[slug])
            assert [(intent["amount"], intent["status"]) for intent in intents] == [(amount_due_cents, "succeeded")], slug

        # The replica catches up, and the usage API reads from it.
        total = query(primary.url(DATABASE), "SELECT count(*) FROM usage_usageevent")[0][0]
        wait_until(lambda: query(replica.url(DATABASE), "SELECT count(*) FROM usage_usageevent")[0][0] == total,
                   30, "the replica caught up")
        for port in ports:
            assert call(port, secret, "GET", "/api/v1/usage")[0] == 200
        # The nodes keep their connections (CONN_MAX_AGE): the replica shows them, and the last
        # statement each ran there, the usage API's read of the rollups.
        served = query(replica.url("postgres"), "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                       f"AND datname = '{DATABASE}' AND query ILIKE '%usage_dailyrollup%'")[0][0]  # fmt: skip
        assert served >= 1
        # So does the dashboard: a person signs in through a node (a write: the primary), and once
        # the cookie that keeps them on the primary for a moment after it is gone, the overview's
        # reads run on the replica, the only statements it sees meanwhile (the clients are done).
        import requests

        base = f"http://127.0.0.1:{ports[1]}"
        browser = requests.Session()
        login = browser.get(f"{base}/login/", timeout=15)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
        signed_in = browser.post(f"{base}/login/", data={"username": "cluster@test.example", "password": PASSWORD,
                                 "csrfmiddlewaretoken": token}, allow_redirects=False, timeout=15)  # fmt: skip
        assert signed_in.status_code == 302, signed_in.text[:300]
        browser.cookies.pop("mb_primary", None)
        [(before,)] = query(replica.url("postgres"), "SELECT clock_timestamp()")
        overview = browser.get(f"{base}/", timeout=15)
        assert overview.status_code == 200 and "cluster" in overview.text
        [(ran,)] = query(replica.url("postgres"), "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                         "AND state_change >= %s", [DATABASE, before])  # fmt: skip
        assert ran >= 1, "the overview read nothing from the replica"
    finally:
        if sender is not None:
            sender.close()
        if fleet is not None:
            fleet.stop()
        for node in nodes:
            node.stop()
        for process in (bouncer, redis, stripe):
            if process is not None:
                process.stop()
        for server in (replica, primary):
            if server is not None:
                server.stop()
