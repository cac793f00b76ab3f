#!/usr/bin/env bash
# The demo in one command (`make run`): migrate, seed the demo workspace, start two Celery workers
# (the default queue, and the webhooks queue: config/celery.py) and beat in the background, then
# serve the app in the foreground. Ctrl-C stops everything.
#
# Embedded defaults: SQLite under var/ and kombu's filesystem broker under var/celery/, so nothing
# else needs to run. DATABASE_URL / REDIS_URL in the environment are honoured when set.
# Payments: without STRIPE_SECRET_KEY, a local Stripe simulator (localstripe, its store in
# var/localstripe.pickle) is started first and the app pointed at it (test mode, no money moves);
# with STRIPE_SECRET_KEY set, none of that: the app talks to the Stripe the environment names.
# Variables: HOST (127.0.0.1), PORT (8000), DEMO_PASSWORD (meterboard-demo), LOCALSTRIPE_PORT (8420).
set -euo pipefail
cd "$(dirname "$0")/.."

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
DEMO_PASSWORD="${DEMO_PASSWORD:-meterboard-demo}"
PY=.venv/bin/python
CELERY=.venv/bin/celery
VAR_DIR="${MB_VAR_DIR:-var}"  # MB_VAR_DIR moves var/ (settings read it too)
LOG_DIR="$VAR_DIR/log"
LOCALSTRIPE_PORT="${LOCALSTRIPE_PORT:-8420}"

export DEBUG="${DEBUG:-1}"
export PYTHONUNBUFFERED=1
case "$HOST" in
  127.0.0.1 | localhost) URL_HOST="$HOST" ;;
  # Every interface: reachable under any name, so accept any (development only, DEBUG=1).
  0.0.0.0 | ::) URL_HOST=127.0.0.1 && export ALLOWED_HOSTS="${ALLOWED_HOSTS:-*}" ;;
  *) URL_HOST="$HOST" && export ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1,[::1],$HOST}" ;;
esac
URL="http://$URL_HOST:$PORT/"

if [[ ! -x "$PY" || ! -x "$CELERY" ]]; then
  echo "No .venv here: run 'make run' (it creates one), not scripts/run.sh directly." >&2
  exit 1
fi
port_answers() {  # host port
  "$PY" -c "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)" "$1" "$2" 2>/dev/null
}
if port_answers "$URL_HOST" "$PORT"; then
  echo "Port $PORT on $HOST is already in use: stop what holds it, or run 'make run PORT=8001'." >&2
  exit 1
fi
if [[ -z "${STRIPE_SECRET_KEY:-}" ]] && port_answers 127.0.0.1 "$LOCALSTRIPE_PORT"; then
  echo "Port $LOCALSTRIPE_PORT (the local Stripe simulator's) is already in use: stop what holds it," \
    "or run 'make run LOCALSTRIPE_PORT=8421'." >&2
  exit 1
fi

mkdir -p "$LOG_DIR"
# The web server's and the Celery workers' metrics (/metrics) are added up from files here
# (core.metrics), emptied before any process of this run writes to it.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-${MB_VAR_DIR:-var}/prometheus}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
if [[ -n "${DATABASE_URL:-}" ]]; then
  echo "==> Database: ${DATABASE_URL%%:*}, from DATABASE_URL"
else
  echo "==> Database: SQLite, ${MB_VAR_DIR:-var}/meterboard.sqlite3 (set DATABASE_URL for another)"
fi
if [[ -n "${REDIS_URL:-}" ]]; then
  echo "==> Broker:   Redis, from REDIS_URL"
else
  echo "==> Broker:   filesystem, ${MB_VAR_DIR:-var}/celery/ (no Redis needed; set REDIS_URL for Redis)"
fi

WORKER_PID=""
WEBHOOK_WORKER_PID=""
BEAT_PID=""
LOCALSTRIPE_PID=""
stop_background() {
  trap - EXIT INT TERM
  local pids=()
  for pid in "$WORKER_PID" "$WEBHOOK_WORKER_PID" "$BEAT_PID" "$LOCALSTRIPE_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  if ((${#pids[@]})); then
    echo
    echo "==> Stopping the background processes (the Celery workers' warm shutdown takes a few seconds)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # A warm shutdown lets the task at hand finish; do not wait for ever.
    for _ in $(seq 1 200); do
      local alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "==> Stopped."
  fi
}
on_signal() {
  stop_background
  exit 0  # stopped on request: not a failure (make would print "Error 130")
}
trap stop_background EXIT
trap on_signal INT TERM

# Payments. localstripe answers the Stripe API and serves a stand-in for Stripe.js at
# /js.stripe.com/v3/ (the payment page loads it from there: the CSP follows STRIPE_JS_URL and
# STRIPE_API_BASE); it POSTs its events, signed, to the app's webhook. Its store is written on every
# change, so a restart keeps the demo's customer, card and payments.
start_localstripe() {
  local base="http://$URL_HOST:$LOCALSTRIPE_PORT"
  echo "==> Payments: no STRIPE_SECRET_KEY, so a local Stripe simulator (localstripe) at $base"
  echo "    (test mode: no money moves; its log in $LOG_DIR/localstripe.log, its store in $VAR_DIR/localstripe.pickle)"
  MB_LOCALSTRIPE_STORE="$VAR_DIR/localstripe.pickle" \
    "$PY" scripts/localstripe_server.py --port "$LOCALSTRIPE_PORT" >>"$LOG_DIR/localstripe.log" 2>&1 &
  LOCALSTRIPE_PID=$!
  export STRIPE_SECRET_KEY=sk_test_meterboard_demo STRIPE_PUBLISHABLE_KEY=pk_test_meterboard_demo
  export STRIPE_API_BASE="$base" STRIPE_JS_URL="$base/js.stripe.com/v3/"
  STRIPE_WEBHOOK_SECRET="whsec_$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
  export STRIPE_WEBHOOK_SECRET
  for _ in $(seq 1 300); do
    port_answers 127.0.0.1 "$LOCALSTRIPE_PORT" && break
    if ! kill -0 "$LOCALSTRIPE_PID" 2>/dev/null; then
      echo "The Stripe simulator stopped; the end of $LOG_DIR/localstripe.log:" >&2
      tail -n 30 "$LOG_DIR/localstripe.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  # Its webhooks live in memory only: registered again on every start, with this run's secret.
  "$PY" - "$base" "${URL}stripe/webhook/" <<'PYTHON'
import os, sys, requests
base, url = sys.argv[1], sys.argv[2]
requests.post(f"{base}/_config/webhooks/meterboard", data={"url": url, "secret": os.environ["STRIPE_WEBHOOK_SECRET"]},
              timeout=10).raise_for_status()
PYTHON
}
if [[ -n "${STRIPE_SECRET_KEY:-}" ]]; then
  echo "==> Payments: Stripe at ${STRIPE_API_BASE:-https://api.stripe.com}, from STRIPE_SECRET_KEY"
else
  start_localstripe
fi

echo "==> Migrating the database"
"$PY" manage.py migrate --no-input

echo "==> Seeding the demo workspace (three months of traffic as it would arrive: the first run takes about 15 seconds)"
"$PY" manage.py seed_demo --url "$URL" --password "$DEMO_PASSWORD"

echo "==> Starting the Celery workers and beat (logs in $LOG_DIR/)"
"$CELERY" -A config worker -Q celery --loglevel=INFO --concurrency=1 >"$LOG_DIR/worker.log" 2>&1 &
WORKER_PID=$!
# Webhook deliveries have their own queue and worker, so that a slow receiver never delays an
# evaluation or an e-mail; more than WEBHOOK_CONCURRENCY_PER_WORKSPACE (2) processes, so that one
# workspace's slow receivers never hold them all.
"$CELERY" -A config worker -Q webhooks -n "webhooks-$$@%h" --loglevel=INFO \
  --concurrency="${WEBHOOK_WORKER_CONCURRENCY:-3}" >"$LOG_DIR/webhooks-worker.log" 2>&1 &
WEBHOOK_WORKER_PID=$!
"$CELERY" -A config beat --loglevel=INFO >"$LOG_DIR/beat.log" 2>&1 &
BEAT_PID=$!

# Wait (briefly) for the workers to say they are ready, so a broken setup shows here, not later.
for _ in $(seq 1 300); do
  grep -q " ready\." "$LOG_DIR/worker.log" 2>/dev/null && grep -q " ready\." "$LOG_DIR/webhooks-worker.log" 2>/dev/null && break
  for pair in "$WORKER_PID:worker.log" "$WEBHOOK_WORKER_PID:webhooks-worker.log"; do
    if ! kill -0 "${pair%%:*}" 2>/dev/null; then
      echo "A Celery worker stopped; the end of $LOG_DIR/${pair#*:}:" >&2
      tail -n 30 "$LOG_DIR/${pair#*:}" >&2
      exit 1
    fi
  done
  sleep 0.1
done
if ! kill -0 "$BEAT_PID" 2>/dev/null; then
  echo "Celery beat stopped; the end of $LOG_DIR/beat.log:" >&2
  tail -n 30 "$LOG_DIR/beat.log" >&2
  exit 1
fi
grep -q " ready\." "$LOG_DIR/worker.log" || echo "(The worker is still starting; see $LOG_DIR/worker.log.)"
grep -q " ready\." "$LOG_DIR/webhooks-worker.log" || echo "(The webhooks worker is still starting; see $LOG_DIR/webhooks-worker.log.)"

if [[ -n "$LOCALSTRIPE_PID" ]]; then
  PAYMENTS="test mode: the local Stripe simulator at $STRIPE_API_BASE, no money moves (test cards: ${URL}payment/)"
  LOCALSTRIPE_LOG=", $LOG_DIR/localstripe.log"
else
  PAYMENTS="Stripe at ${STRIPE_API_BASE:-https://api.stripe.com}, from STRIPE_SECRET_KEY"
  LOCALSTRIPE_LOG=""
fi

cat <<EOF

  Meterboard is running at $URL
    Demo login:   demo@meterboard.local / $DEMO_PASSWORD
    Staff login:  staff@meterboard.local / $DEMO_PASSWORD  (Django admin: ${URL}admin/)
    API docs:     ${URL}api/docs/
    Metrics:      ${URL}metrics  (Prometheus; from this machine)
    Payments:     $PAYMENTS
    Logs:         $LOG_DIR/worker.log, $LOG_DIR/webhooks-worker.log, $LOG_DIR/beat.log$LOCALSTRIPE_LOG (the web server logs below)
  Ctrl-C stops everything.

EOF

# Not exec: this shell stays to stop the workers, beat and the simulator when the server exits.
"$PY" manage.py runserver "$HOST:$PORT"
