#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with only Rust installed:
# installs what is missing, starts throwaway PostgreSQL, MariaDB and Redis on loopback in a
# temporary directory, runs fmt, clippy, every test and the deploy/ checks, and stops everything,
# also on failure.
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/switchyard-tests.XXXXXX)
chmod 755 "$WORK"
PIDS_TO_STOP=()

log() { printf '[run.sh] %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "${PGBIN:-}" ] && [ -d "$WORK/pg/data" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1
  fi
  [ -f "$WORK/my/mysqld.pid" ] && kill "$(cat "$WORK/my/mysqld.pid")" 2>/dev/null
  [ -f "$WORK/redis/redis.pid" ] && kill "$(cat "$WORK/redis/redis.pid")" 2>/dev/null
  for p in "${PIDS_TO_STOP[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  rm -rf "$WORK"
  log "services stopped (exit $rc)"
  exit $rc
}
trap cleanup EXIT INT TERM

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Install what is missing.
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The dashboard's browser test: headless Chromium over WebDriver, and Node.js for the OIDC provider.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 2. PostgreSQL (initdb refuses root: run it as the postgres user).
PGPORT=$(free_port)
mkdir -p "$WORK/pg" && chown postgres:postgres "$WORK/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --no-sync >"$WORK/pg-init.log" 2>&1
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
log "postgres on 127.0.0.1:$PGPORT"

# 3. MariaDB.
MYPORT=$(free_port)
mkdir -p "$WORK/my" && chown mysql:mysql "$WORK/my"
mariadb-install-db --no-defaults --user=mysql --datadir="$WORK/my/data" --auth-root-authentication-method=normal \
  --skip-test-db >"$WORK/my-install.log" 2>&1
runuser -u mysql -- "$MARIADBD" --no-defaults --datadir="$WORK/my/data" --socket="$WORK/my/mysqld.sock" --port="$MYPORT" \
  --bind-address=127.0.0.1 --pid-file="$WORK/my/mysqld.pid" --log-error="$WORK/my/err.log" \
  --innodb-flush-log-at-trx-commit=0 --skip-log-bin --max-connections=300 >/dev/null 2>&1 &
for _ in $(seq 150); do mariadb-admin --no-defaults -S "$WORK/my/mysqld.sock" -uroot ping >/dev/null 2>&1 && break; sleep 0.2; done
mariadb --no-defaults -S "$WORK/my/mysqld.sock" -uroot -e \
  "CREATE DATABASE sy; CREATE USER 'sy'@'%' IDENTIFIED BY 'sy'; GRANT ALL ON *.* TO 'sy'@'%';"
log "mariadb on 127.0.0.1:$MYPORT"

# 4. Redis (persistence off: a restart starts empty).
RPORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --daemonize yes --dir "$WORK/redis" --pidfile "$WORK/redis/redis.pid" \
  --logfile "$WORK/redis/redis.log" --save "" --appendonly no
for _ in $(seq 100); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
log "redis on 127.0.0.1:$RPORT"

# 5. An OTLP trace receiver (OTLP/gRPC in, spans out as JSON for the assertions). No Jaeger
# package exists for Debian or PyPI; the receiver speaks the same protocol (ECOSYSTEM.md §3).
VENV="$WORK/venv"
python3 -m venv "$VENV"
# The official client SDKs go in the same venv (the dialect tests drive them).
"$VENV/bin/pip" install -q --disable-pip-version-check opentelemetry-proto grpcio anthropic openai >"$WORK/pip.log" 2>&1 \
  || { cat "$WORK/pip.log" >&2; exit 1; }
export SWITCHYARD_TEST_PYTHON="$VENV/bin/python"
OTLP_GRPC=$(free_port); OTLP_HTTP=$(free_port)
"$VENV/bin/python" tests/fixtures/otlp/otlp_sink.py "$OTLP_GRPC" "$OTLP_HTTP" >"$WORK/otlp.log" 2>&1 &
PIDS_TO_STOP+=($!)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$OTLP_HTTP/health" >/dev/null 2>&1 && break; sleep 0.1; done
log "otlp receiver on 127.0.0.1:$OTLP_GRPC (grpc), 127.0.0.1:$OTLP_HTTP (spans)"
export SWITCHYARD_TEST_OTLP_GRPC="http://127.0.0.1:$OTLP_GRPC"
export SWITCHYARD_TEST_OTLP_SPANS="http://127.0.0.1:$OTLP_HTTP"

# 6. A certified OpenID provider (panva's oidc-provider, PKCE required) for the browser test,
# which starts it per test with its own redirect URI; Chromium and ChromeDriver from Debian.
mkdir -p "$WORK/oidc"
cp tests/fixtures/oidc/provider.mjs "$WORK/oidc/"
(cd "$WORK/oidc" && npm install --no-audit --no-fund --loglevel=error oidc-provider@9.13.3 >"$WORK/npm.log" 2>&1) \
  || { cat "$WORK/npm.log" >&2; exit 1; }
export SWITCHYARD_TEST_OIDC_PROVIDER_DIR="$WORK/oidc"
export SWITCHYARD_TEST_CHROMIUM="$(command -v chromium)"
export SWITCHYARD_TEST_CHROMEDRIVER="$(command -v chromedriver)"
# Every dashboard page, as the browser test saw it (1280×800), kept in the checkout.
export SWITCHYARD_TEST_SCREENSHOTS="$PWD/tests/screenshots"
log "oidc-provider $(cd "$WORK/oidc" && node -p 'require("./node_modules/oidc-provider/package.json").version'), $("$SWITCHYARD_TEST_CHROMIUM" --version 2>/dev/null)"

export SWITCHYARD_TEST_PG_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"
export SWITCHYARD_TEST_MYSQL_URL="mysql://sy:sy@127.0.0.1:$MYPORT/sy"
export SWITCHYARD_TEST_REDIS_URL="redis://127.0.0.1:$RPORT/0"
export SWITCHYARD_TEST_PROVIDER_KEY="sk-test-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export RUST_BACKTRACE=1
export CARGO_TERM_COLOR=never

# 7. Checks and tests.
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test"
cargo test --workspace --all-targets -- --test-threads=4 --skip cluster::
# The cluster suite (three nodes behind nginx, TESTPLAN L1, L2, F1, F7–F13) loads the machine:
# it runs alone, one test at a time. SWITCHYARD_SOAK=1 runs its longer soak forms.
log "cargo test: cluster suite"
cargo test --test it cluster:: -- --test-threads=1
log "deploy checks"
bash deploy/check.sh
