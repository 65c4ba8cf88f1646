#!/usr/bin/env bash
# The whole test suite against real servers: installs redis-server and PostgreSQL (and Python's
# venv, for schemathesis) when missing,
# starts both on loopback in a temporary directory (PostgreSQL as an unprivileged user), runs
# every test, and stops them again even when a test fails. Arguments filter tests by name.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# What is missing, installed in one go: the servers, and Python's venv for schemathesis.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -n "$(pg_bin)" ] || missing+=(postgresql)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
# The node-boundary test builds a preload library a tenant could upload.
command -v cc >/dev/null || missing+=(gcc)
# The alerting rules are checked and unit-tested with promtool (Debian's prometheus package).
command -v promtool >/dev/null || missing+=(prometheus)
# The enrolment tests make RSA and weak-curve CSRs with openssl.
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: ${missing[*]} needed; run as root once to install them" >&2
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PG_BIN="$(pg_bin)"

tmp="$(mktemp -d /tmp/mamba-test.XXXXXX)"
chmod 755 "$tmp"
redis_pid=""
pg_user="$(id -un)"
run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  set +e
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  [ -f "$tmp/pg/postmaster.pid" ] && run_pg "$PG_BIN/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

free_port redis_port
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --dir "$tmp" --logfile "$tmp/redis.log" &
redis_pid=$!

free_port pg_port
if [ "$(id -u)" -eq 0 ]; then pg_user=postgres; fi
mkdir -p "$tmp/pg" "$tmp/pgsock"
[ "$(id -u)" -eq 0 ] && chown postgres "$tmp/pg" "$tmp/pgsock"
run_pg "$PG_BIN/initdb" -D "$tmp/pg" -U "$pg_user" --auth=trust -E UTF8 >/dev/null
run_pg "$PG_BIN/pg_ctl" -D "$tmp/pg" -l "$tmp/pgsock/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $tmp/pgsock -c fsync=off" start >/dev/null

for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done

export TEST_POSTGRES_URL="postgres://$pg_user@127.0.0.1:$pg_port/postgres"
export TEST_REDIS_URL="redis://127.0.0.1:$redis_port/"
echo "test.sh: PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port"

cargo fmt --all -- --check
# One debug build shared by the binaries the tests start, the tests, the benchmarks and clippy.
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
# The Prometheus alerting rules: valid, and firing when (and only when) they should.
(cd "$root/deploy/prometheus" && promtool check rules mamba-alerts.yml && promtool test rules mamba-alerts.test.yml)
# Arguments, if any, filter the tests by name (`scripts/test.sh preflight`). Tests that need
# root (`#[ignore = "needs root"]`: Wings giving each server its own user and cgroups) run
# too when this script is root; as another user they are listed as ignored, never passed.
if [ "$(id -u)" -eq 0 ]; then
  cargo test --workspace --locked -- --test-threads 2 --include-ignored "$@"
else
  echo "test.sh: not root: the tests marked 'needs root' are ignored (run as root to run them)"
  cargo test --workspace --locked -- --test-threads 2 "$@"
fi
# The whole suite also fuzzes every operation of /openapi.json against the real binary.
if [ "$#" -eq 0 ]; then
  bash "$root/scripts/schemathesis.sh"
fi
