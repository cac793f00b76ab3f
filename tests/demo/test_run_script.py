"""`make run` for real (scripts/run.sh): on a clean machine with neither PostgreSQL, Redis nor a Stripe
key (SQLite and the filesystem broker under a temporary MB_VAR_DIR, free ports), it starts the local
Stripe simulator, seeds the demo with its past statements paid, serves the payment page in test
mode, takes a card and its webhook; a stop ends every process it started, and a restart keeps the
simulator's customers and charges nobody again. About a minute: the demo is seeded in full, twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.budgets.conftest import wait_until
from tests.stripe_server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
START_SECONDS = 240  # migrate and seed three months on SQLite: 30 s here, more on a busy machine
DEMO_EMAIL, DEMO_PASSWORD = "demo@meterboard.local", "meterboard-demo"


class RunScript:
    """scripts/run.sh in a session of its own, so that a stop reaches every process it started."""

    def __init__(self, var_dir: Path):
        self.var_dir = var_dir
        self.port, self.stripe_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stripe_url = f"http://127.0.0.1:{self.stripe_port}"
        self.process: subprocess.Popen | None = None
        self.out = var_dir.parent / "run.out"

    def start(self) -> str:
        """Start it and wait for its banner; what it printed so far."""
        env = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(self.var_dir)), "LANG": "C.UTF-8",
            "MB_VAR_DIR": str(self.var_dir), "PORT": str(self.port), "LOCALSTRIPE_PORT": str(self.stripe_port),
        }  # fmt: skip  (no DATABASE_URL, REDIS_URL, STRIPE_*: a clean machine)
        self.out.write_text("")
        self.process = subprocess.Popen(
            ["scripts/run.sh"], cwd=ROOT, env=env, stdout=self.out.open("a"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self._serving, START_SECONDS, "make run serving")
        return self.out.read_text()

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"run.sh exited with {self.process.returncode}:\n{self.out.read_text()}")
        if "Meterboard is running at" not in self.out.read_text():
            return False
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        """What a terminal's Ctrl-C amounts to: the foreground server ends, then run.sh stops the rest."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=60)
        finally:
            self.process = None

    def group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def signed_in(self) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.url}/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        answer = session.post(
            f"{self.url}/login/", data={"csrfmiddlewaretoken": token, "username": DEMO_EMAIL, "password": DEMO_PASSWORD},
            headers={"Referer": f"{self.url}/login/"}, timeout=10,
        )  # fmt: skip
        assert answer.url.rstrip("/") == self.url, "signed in"
        return session

    def stripe(self, path: str) -> dict:
        return requests.get(f"{self.stripe_url}{path}", auth=("sk_test_meterboard_demo", ""), timeout=10).json()


@pytest.fixture
def run_script(tmp_path):
    script = RunScript(tmp_path / "var")
    yield script
    script.stop()


def past_statements(session: requests.Session, url: str) -> list[dict]:
    return session.get(f"{url}/api/v1/statements?workspace=demo", timeout=10).json()


def test_make_run_serves_a_demo_that_pays_and_stops_cleanly(run_script):
    out = run_script.start()

    assert f"a local Stripe simulator (localstripe) at {run_script.stripe_url}" in out
    assert re.search(r"paid on .*, at attempt 2 \(the first card was declined\)", out), out
    assert "Payments:     test mode: the local Stripe simulator" in out
    session = run_script.signed_in()
    statements = past_statements(session, run_script.url)
    assert statements and {s["status"] for s in statements} == {"paid"}
    customers = run_script.stripe("/v1/customers")["data"]
    [customer] = [c for c in customers if c["metadata"].get("workspace_slug") == "demo"]
    intents = [i for i in run_script.stripe("/v1/payment_intents?limit=100")["data"] if i["customer"] == customer["id"]]
    paid = sorted((int(i["metadata"]["statement_id"]), i["amount"]) for i in intents if i["status"] == "succeeded")
    assert paid == sorted((s["id"], s["amount_due_cents"]) for s in statements)

    page = session.get(f"{run_script.url}/payment/", timeout=10)
    assert "payments go to a local Stripe simulator, no money moves" in page.text
    assert "Visa •••• 4242" in page.text and "4000000000000341" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert f"script-src 'self' {run_script.stripe_url}" in policy
    assert f'<script src="{run_script.stripe_url}/js.stripe.com/v3/"' in page.text
    assert requests.get(f"{run_script.stripe_url}/js.stripe.com/v3/", timeout=10).status_code == 200
    # A card saved through the API the page uses: the simulator's webhook reaches the app, signed.
    answer = session.post(
        f"{run_script.url}/api/v1/billing/payment-method?workspace=demo", json={"payment_method": "pm_card_visa"},
        headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": f"{run_script.url}/payment/"}, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    log = run_script.var_dir / "log" / "localstripe.log"
    wait_until(lambda: 'webhook "customer.updated" successfully delivered' in log.read_text(), 30, "the webhook")

    pgid = run_script.process.pid
    run_script.stop()
    assert not run_script.group_alive(pgid), "a process of make run outlived it"

    # Restarted: the simulator's store is kept, nothing is charged again.
    out = run_script.start()
    assert "already there (duplicates)" in out and "no longer knows" not in out
    session = run_script.signed_in()
    assert past_statements(session, run_script.url) == statements
    again = [i for i in run_script.stripe("/v1/payment_intents?limit=100")["data"] if i["customer"] == customer["id"]]
    assert sorted(i["id"] for i in again) == sorted(i["id"] for i in intents)
    assert "Visa •••• 4242" in session.get(f"{run_script.url}/payment/", timeout=10).text
