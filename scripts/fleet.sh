#!/usr/bin/env bash
# The reference deployment on loopback, in a temporary directory: one PostgreSQL, one Redis,
# `api migrate` once, two panel replicas (a and b, each with its own REST and node-channel
# ports) and HAProxy in front of them (deploy/haproxy.cfg: HTTP with health checks for REST,
# TCP passthrough for the node channel). It prints where everything listens and runs until
# Ctrl-C; everything it started is stopped and the directory removed on the way out.
#
#   scripts/fleet.sh           start, print, wait
#   scripts/fleet.sh --check   start, then show it working and exit: both replicas healthy
#                              behind HAProxy, a user registered through one and logged in
#                              through the other, replica a killed (-9) with requests still
#                              answered through HAProxy
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
check=false
[ "${1:-}" = "--check" ] && check=true

for tool in redis-server haproxy; do
  command -v "$tool" >/dev/null || { echo "fleet.sh: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done
[ -n "$(pg_bin)" ] || { echo "fleet.sh: PostgreSQL is needed (apt-get install postgresql)" >&2; exit 1; }

cargo build --locked --bins --quiet
bin="$root/target/debug"

tmp="$(mktemp -d /tmp/mamba-fleet.XXXXXX)"
chmod 755 "$tmp"
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait "${pids[@]}" 2>/dev/null
  stop_services
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_services "$tmp"
mkdir -p "$tmp/panel"
cd "$tmp/panel"         # the replicas' relative defaults (certs/, data/) resolve here: shared
"$bin/dev-ca" init >/dev/null
"$bin/dev-ca" server localhost 127.0.0.1 >/dev/null

free_port http_a; free_port grpc_a; free_port http_b; free_port grpc_b
free_port http_front; free_port grpc_front; free_port stats
export DATABASE_URL="$SERVICES_POSTGRES_URL" REDIS_URL="$SERVICES_REDIS_URL"
export TRUSTED_PROXIES=127.0.0.1
# Every node connection comes from HAProxy's address: the per-address handshake cap would be a
# cap of 16 for the whole fleet.
export PANEL_GRPC_MAX_HANDSHAKES=256 PANEL_GRPC_MAX_HANDSHAKES_PER_IP=256
"$bin/api" migrate >"$tmp/migrate.log" 2>&1

start_replica() { # id, http port, grpc port
  # PANEL_GRPC_ADVERTISE: where a node's file transfers for this replica come straight here
  # (the node's own way in is HAProxy, which may lead to the other replica).
  PANEL_REPLICA_ID="$1" PANEL_HTTP_ADDR="127.0.0.1:$2" PANEL_GRPC_ADDR="127.0.0.1:$3" \
    PANEL_GRPC_ADVERTISE="127.0.0.1:$3" \
    "$bin/api" serve >>"$tmp/replica-$1.log" 2>&1 &
  pids+=($!)
  eval "pid_$1=$!"
  wait_port "127.0.0.1:$2" 300 || { cat "$tmp/replica-$1.log" >&2; exit 1; }
}
# One after the other: the first makes the development keys under data/ that both use.
start_replica a "$http_a" "$grpc_a"
start_replica b "$http_b" "$grpc_b"

FLEET_HTTP_BIND="127.0.0.1:$http_front" FLEET_GRPC_BIND="127.0.0.1:$grpc_front" \
  FLEET_A_HTTP="127.0.0.1:$http_a" FLEET_B_HTTP="127.0.0.1:$http_b" \
  FLEET_A_GRPC="127.0.0.1:$grpc_a" FLEET_B_GRPC="127.0.0.1:$grpc_b" \
  FLEET_STATS_BIND="127.0.0.1:$stats" \
  haproxy -W -db -f "$root/deploy/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
wait_port "127.0.0.1:$http_front" || { cat "$tmp/haproxy.log" >&2; exit 1; }

cat <<EOF
fleet.sh: the reference deployment is up (directory $tmp)
  REST (HAProxy, HTTP)          http://127.0.0.1:$http_front
  node channel (HAProxy, TCP)   https://127.0.0.1:$grpc_front   (WINGS_API_URL; CA: $tmp/panel/certs/ca/ca-cert.pem)
  replica a                     REST 127.0.0.1:$http_a, nodes 127.0.0.1:$grpc_a   (log $tmp/replica-a.log)
  replica b                     REST 127.0.0.1:$http_b, nodes 127.0.0.1:$grpc_b   (log $tmp/replica-b.log)
  HAProxy stats                 http://127.0.0.1:$stats/
  PostgreSQL                    $SERVICES_POSTGRES_URL
  Redis                         $SERVICES_REDIS_URL
EOF

if ! $check; then
  echo "fleet.sh: Ctrl-C stops everything"
  wait "${pids[@]}"
  exit 0
fi

front="http://127.0.0.1:$http_front"
json() { curl -sS -H 'content-type: application/json' "$@"; }
status() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
echo; echo "fleet.sh --check"
# HAProxy marks a replica up after two good checks 500 ms apart.
for _ in $(seq 1 50); do
  up="$(curl -sS "http://127.0.0.1:$stats/;csv" | grep -c '^panel_http,[ab],.*,UP,' || true)"
  [ "$up" -eq 2 ] && break
  sleep 0.1
done
echo "  replicas up behind HAProxy: $up of 2"
[ "$up" -eq 2 ]
json -o /dev/null -X POST "http://127.0.0.1:$http_a/api/auth/register" \
  -d '{"email":"ops@example.com","password":"a long enough passphrase"}'
# The verification mail (quoted-printable: `token=3D…`), written just after the answer.
for _ in $(seq 1 50); do
  token="$(cat "$tmp"/panel/data/outbox/*.eml 2>/dev/null | grep -o 'token=3D[A-Za-z0-9_-]*' | head -n1 | cut -c9- || true)"
  [ -n "$token" ] && break
  sleep 0.1
done
verified="$(status -X POST -H 'content-type: application/json' \
  "http://127.0.0.1:$http_b/api/auth/verify-email" -d "{\"token\":\"$token\"}")"
echo "  registered on replica a; its mailed link verified through replica b: $verified"
[ "$verified" = 200 ]
login() { json -X POST "$front/api/auth/login" -d '{"email":"ops@example.com","password":"a long enough passphrase"}'; }
login | grep -q access_token && echo "  logged in through HAProxy"
kill -9 "$pid_a"
wait "$pid_a" 2>/dev/null || true
echo "  replica a killed (-9)"
answered=0
for _ in $(seq 1 20); do
  [ "$(status "$front/health")" = 200 ] && answered=$((answered + 1))
done
echo "  /health through HAProxy right after: $answered of 20 answered 200"
[ "$answered" -eq 20 ]
login | grep -q access_token && echo "  logged in through HAProxy (replica b)"
echo "fleet.sh --check: ok"
