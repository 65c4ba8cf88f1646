#!/usr/bin/env bash
# The whole test suite against real servers: installs redis-server and PostgreSQL (and Python's
# venv, for schemathesis) when missing,
# starts both on loopback in a temporary directory (PostgreSQL as an unprivileged user), runs
# every test, and stops them again even when a test fails. Arguments filter tests by name.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

# What is missing, installed in one go: the servers, and Python's venv for schemathesis.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# The Redis Cluster tests start their own cluster (tests/src/redis_cluster.rs) with redis-cli.
command -v redis-cli >/dev/null || missing+=(redis-tools)
[ -n "$(pg_bin)" ] || missing+=(postgresql)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
# The node-boundary test builds a preload library a tenant could upload.
command -v cc >/dev/null || missing+=(gcc)
# The alerting rules are checked and unit-tested with promtool (Debian's prometheus package).
command -v promtool >/dev/null || missing+=(prometheus)
# The enrolment tests make RSA and weak-curve CSRs with openssl.
command -v openssl >/dev/null || missing+=(openssl)
# The fleet tests put HAProxy in front of two replicas (deploy/haproxy.cfg).
command -v haproxy >/dev/null || missing+=(haproxy)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: ${missing[*]} needed; run as root once to install them" >&2
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

tmp="$(mktemp -d /tmp/mamba-test.XXXXXX)"
chmod 755 "$tmp"
cleanup() {
  set +e
  stop_services
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_services "$tmp"
export TEST_POSTGRES_URL="$SERVICES_POSTGRES_URL"
export TEST_REDIS_URL="$SERVICES_REDIS_URL"
echo "test.sh: PostgreSQL at $TEST_POSTGRES_URL, Redis at $TEST_REDIS_URL"

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
  # The reference deployment (HAProxy, two replicas, PostgreSQL, Redis) starts, works and
  # survives a replica killed, as the README shows it.
  bash "$root/scripts/fleet.sh" --check
fi
