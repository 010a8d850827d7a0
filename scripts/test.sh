#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: ruff, mypy, import contracts, then pytest on SQLite
# and on PostgreSQL, side by side. This is the one test command (README, .ci/run).
#
#   scripts/test.sh              # everything
#   scripts/test.sh -k claims    # extra arguments go to both pytest runs
#
# Redis: ARC_TEST_REDIS_URL (default redis://127.0.0.1:6379/7) for the SQLite run and
# ARC_TEST_REDIS_URL_PG (default: database 8 of the same server) for the PostgreSQL run,
# started or installed the same way.
# PostgreSQL: uses ARC_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# starting the local cluster if it is installed but down, installing it with apt-get when
# missing and we are root. Where it still cannot be reached, the PostgreSQL run is skipped
# with the reason printed; the SQLite run always runs.
# Chromium: the browser tests use Debian's /usr/bin/chromium, installed with apt-get when missing
# and we are root; without it they are skipped (reason printed by pytest). nginx likewise, for the
# load-balancer test.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PG_URL=${ARC_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# Redis for the channel-layer tests (database 7, so a developer's own hub on db 0 is left alone).
export ARC_TEST_REDIS_URL=${ARC_TEST_REDIS_URL:-redis://127.0.0.1:6379/7}
REDIS_URL=$ARC_TEST_REDIS_URL

say() { printf '\n== %s\n' "$*"; }

say "installing test dependencies into .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt

pg_up() { .venv/bin/python - "$PG_URL" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}

ensure_postgres() {
  pg_up && return 0
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing PostgreSQL (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || true
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 20); do pg_up && return 0; sleep 0.5; done
    # A fresh Debian cluster asks TCP clients for a password: give postgres the trust the tests expect.
    if [ "$(id -u)" = 0 ]; then
      for hba in /etc/postgresql/*/main/pg_hba.conf; do
        [ -f "$hba" ] && grep -q "arc-test" "$hba" || { [ -f "$hba" ] && sed -i '1i host all postgres 127.0.0.1/32 trust # arc-test\nhost all postgres ::1/128 trust # arc-test' "$hba"; }
      done
      for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null 2>&1 || true
      done
      for _ in $(seq 1 10); do pg_up && return 0; sleep 0.5; done
    fi
  fi
  return 1
}

redis_up() { .venv/bin/python - "$REDIS_URL" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()
PY
}

ensure_redis() {
  redis_up && return 0
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Redis (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) || true
  fi
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || \
      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do redis_up && return 0; sleep 0.25; done
  fi
  return 1
}

# nginx for the load-balancer test (tests/test_nginx.py): Debian's package, never started as a service.
ensure_nginx() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing nginx (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null) || true
    # The package may start its own daemon on port 80; the test runs its own nginx.
    (command -v service >/dev/null 2>&1 && service nginx stop >/dev/null 2>&1) || pkill -x nginx || true
  fi
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

# Debian's package only: no browser is ever downloaded (`playwright install` is not used).
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Chromium (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || true
  fi
  [ -x /usr/bin/chromium ]
}

say "ruff (lint and format)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

say "mypy"
.venv/bin/mypy .

say "import contracts (lint-imports: the layers of docs/architecture.md)"
.venv/bin/lint-imports --no-cache

if ensure_redis; then
  say "Redis reachable at $REDIS_URL: channel-layer tests run on in-memory and Redis"
else
  say "Redis UNAVAILABLE at $REDIS_URL: its channel-layer tests will be skipped (reason printed by pytest)"
fi

if ensure_chromium; then
  say "Chromium at /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown')): browser tests run"
else
  say "Chromium UNAVAILABLE (no /usr/bin/chromium, and it could not be installed here): browser tests will be skipped"
fi

if ensure_nginx; then
  say "nginx available: the load-balancer test runs"
else
  say "nginx UNAVAILABLE (and it could not be installed here): the load-balancer test will be skipped"
fi

# arc.py (the reference the interop tests run) is fetched once here, so the two runs below
# do not both download it into .cache at the same moment.
.venv/bin/python - <<'PY' || true
try:
    from tests.arcref import arc_py_path
    print("arc.py reference:", arc_py_path())
except BaseException as exc:  # pytest.skip raises: offline, the tests say why
    print("arc.py reference unavailable:", exc)
PY

# The SQLite and PostgreSQL runs go side by side (each mostly waits on hub processes and
# sockets), each on its own Redis database; ARC_TEST_SERIAL=1 runs them one after the other.
PG_REDIS_URL=${ARC_TEST_REDIS_URL_PG:-${REDIS_URL%/*}/8}
pg_pid=""
pg_log=$(mktemp)
if ensure_postgres; then
  run_pg() { ARC_DATABASE_URL="$PG_URL" ARC_TEST_REDIS_URL="$PG_REDIS_URL" .venv/bin/pytest "$@"; }
  if [ "${ARC_TEST_SERIAL:-0}" = 1 ]; then
    say "pytest on SQLite"
    env -u ARC_DATABASE_URL .venv/bin/pytest "$@"
    say "pytest on PostgreSQL ($PG_URL)"
    run_pg "$@"
    exit 0
  fi
  say "pytest on PostgreSQL ($PG_URL) started beside the SQLite run; its output follows"
  run_pg "$@" >"$pg_log" 2>&1 &
  pg_pid=$!
else
  say "PostgreSQL run SKIPPED: no server reachable at $PG_URL and none could be started or installed here"
fi

say "pytest on SQLite"
set +e
env -u ARC_DATABASE_URL .venv/bin/pytest "$@"
sqlite_status=$?
pg_status=0
if [ -n "$pg_pid" ]; then
  wait "$pg_pid"
  pg_status=$?
  say "pytest on PostgreSQL ($PG_URL)"
  cat "$pg_log"
fi
rm -f "$pg_log"
set -e
if [ "$sqlite_status" != 0 ] || [ "$pg_status" != 0 ]; then
  say "FAILED: SQLite run exit $sqlite_status, PostgreSQL run exit $pg_status"
  exit 1
fi
