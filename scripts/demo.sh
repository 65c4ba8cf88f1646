#!/usr/bin/env bash
# The main job: builds everything, makes a dev CA (root, issuer) and certificates, starts the
# panel on its embedded defaults (SQLite under data/), enrols two nodes — the first with a
# certificate made by dev-ca, the second by join token (its key made on the node, pinned at
# issue) —, starts two Wings agents, waits until both are online over mutual TLS, shows their
# certificate expiry and renewal state, shows forged nodes being turned away, then tells the tenant
# story over REST (tenant-demo): a server started on a node, its console, stopped, its files
# (upload, list, an If-Match edit and a stale one refused, a path out refused), a teammate
# invited, a deploy script's API key used with curl. It runs in a
# fresh directory, data/demo/, and stops everything it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

http_get() { # path [header]: GET from the panel's REST port without curl
  exec 3<>"/dev/tcp/${PANEL_HTTP_ADDR%:*}/${PANEL_HTTP_ADDR##*:}"
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n%s\r\n' "$1" "${2:+$2$'\r\n'}" >&3
  cat <&3
  exec 3>&-
}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Building (cargo build)"
cargo build --locked --bins
bin="$root/target/debug"

work="$root/data/demo"
rm -rf "$work"
mkdir -p "$work"
cd "$work"            # the panel's relative defaults (certs/, data/) resolve here

export PANEL_HTTP_ADDR="${PANEL_HTTP_ADDR:-127.0.0.1:8080}"
export PANEL_GRPC_ADDR="${PANEL_GRPC_ADDR:-127.0.0.1:3001}"
api_url="https://$PANEL_GRPC_ADDR"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say "A development CA (root + the panel's issuer), the panel's server certificate, one node certificate"
"$bin/dev-ca" init
"$bin/dev-ca" server localhost 127.0.0.1
"$bin/dev-ca" generate us-east-1-node-01 node1.example.com
"$bin/dev-ca" verify us-east-1-node-01
ls -l certs/ca certs/issuer certs/nodes
# The panel signs node certificates with the issuer only (the root key stays here, offline).
export PANEL_ISSUER_CERT_FILE="$work/certs/issuer/issuer-cert.pem"
export PANEL_ISSUER_KEY_FILE="$work/certs/issuer/issuer-key.pem"

say "Registering the nodes in the panel (SQLite at data/panel.db); the second gets a one-time join token"
"$bin/api" node add us-east-1-node-01 node1.example.com
"$bin/api" node add us-east-1-node-02 node2.example.com --join-token --ttl 15m | tee node-02-token.txt
join_token="$(grep '^mjt_' node-02-token.txt)"

say "The preflight: fine for a laptop, every line would stop a production panel (PANEL_ENV=production)"
"$bin/api" preflight

say "Starting the panel (REST $PANEL_HTTP_ADDR, node channel $PANEL_GRPC_ADDR)"
"$bin/api" serve >panel.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/${PANEL_HTTP_ADDR%:*}/${PANEL_HTTP_ADDR##*:}") 2>/dev/null && break
  sleep 0.1
done

start_wings() { # node-id, log file, extra env...
  local node="$1" log="$2"; shift 2
  env $("$bin/dev-ca" env "$node" --api-url "$api_url") WINGS_HEARTBEAT_SECS=2 "$@" "$bin/wings" >"$log" 2>&1 &
  pids+=($!)
}

say "us-east-1-node-02 enrols by join token: key made on the node, CSR over https (a TLS proxy in front of the REST port)"
enroll_addr="${ENROLL_ADDR:-127.0.0.1:8443}"
"$bin/tls-proxy" --listen "$enroll_addr" --upstream "$PANEL_HTTP_ADDR" \
  --cert certs/server/panel-cert.pem --key certs/server/panel-key.pem >tls-proxy.log 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/${enroll_addr%:*}/${enroll_addr##*:}") 2>/dev/null && break
  sleep 0.1
done
WINGS_DATA_DIR="$work/data/wings/us-east-1-node-02" WINGS_JOIN_TOKEN="$join_token" \
  "$bin/wings" enroll --panel "https://$enroll_addr" --ca-cert certs/ca/ca-cert.pem | tee node-02.env
ls -l data/wings/us-east-1-node-02/identity
echo "Pinned before it ever connected (FINGERPRINT set, ONLINE false):"
"$bin/api" node list
echo "The same token again (a replay) is refused:"
WINGS_DATA_DIR="$work/replay" WINGS_JOIN_TOKEN="$join_token" \
  "$bin/wings" enroll --panel "https://$enroll_addr" --ca-cert certs/ca/ca-cert.pem 2>&1 | sed 's/^/  /' || true

say "Starting two Wings agents"
start_wings us-east-1-node-01 wings-1.log
env $(grep -v '^WINGS_API_URL=' node-02.env) WINGS_API_URL="$api_url" WINGS_HEARTBEAT_SECS=2 \
  "$bin/wings" >wings-2.log 2>&1 &
pids+=($!)

online=0
for _ in $(seq 1 100); do
  online=$("$bin/api" node list --json | { grep -o "\"online\":true" || true; } | wc -l)
  [ "$online" -eq 2 ] && break
  sleep 0.2
done
if [ "$online" -ne 2 ]; then
  echo "demo: the nodes did not come online; panel log:" >&2
  cat panel.log >&2
  exit 1
fi
say "Both online: certificate expiry, renewal state and last renewal (node-02's from the issuer, 30 days, renewed by Wings at 2/3)"
"$bin/api" node list
echo
"$bin/api" node list --json

say "api node rotate: us-east-1-node-02 renews now, with overlap (new key, next pin, promoted on reconnect)"
"$bin/api" node rotate us-east-1-node-02
for _ in $(seq 1 50); do
  grep -q 'renewed certificate promoted' wings-2.log && break
  sleep 0.2
done
grep -o 'renewed certificate promoted.*' wings-2.log | tail -n 1 | sed 's/^/  /'
"$bin/api" node list
http_get /metrics | grep -E '^mamba_(node_cert|issuer_cert|node_online)' || true

say "How us-east-1-node-01 confines servers (wings check: user per server, cgroups, uid block)"
env $("$bin/dev-ca" env us-east-1-node-01 --api-url "$api_url") "$bin/wings" check | sed 's/^/  /'

say "Forged node 1: a valid certificate from our CA, but for a CN the panel does not know"
"$bin/dev-ca" generate rogue-node rogue.example.com >/dev/null
start_wings rogue-node rogue.log
say "Forged node 2: CN us-east-1-node-01 with a different key (the pinned fingerprint does not match)"
mkdir -p forged/ca && cp certs/ca/ca-cert.pem certs/ca/ca-key.pem forged/ca/
"$bin/dev-ca" --dir forged generate us-east-1-node-01 node1.example.com >/dev/null
env $("$bin/dev-ca" env us-east-1-node-01 --api-url "$api_url") \
  WINGS_TLS_CERT_FILE="$work/forged/nodes/us-east-1-node-01-cert.pem" \
  WINGS_TLS_KEY_FILE="$work/forged/nodes/us-east-1-node-01-key.pem" \
  "$bin/wings" >forged.log 2>&1 &
pids+=($!)
say "Forged node 3: a certificate from a foreign CA"
"$bin/dev-ca" --dir foreign init >/dev/null
"$bin/dev-ca" --dir foreign generate us-east-1-node-02 node2.example.com >/dev/null
env $("$bin/dev-ca" env us-east-1-node-02 --api-url "$api_url") \
  WINGS_TLS_CERT_FILE="$work/foreign/nodes/us-east-1-node-02-cert.pem" \
  WINGS_TLS_KEY_FILE="$work/foreign/nodes/us-east-1-node-02-key.pem" \
  "$bin/wings" >foreign.log 2>&1 &
pids+=($!)
sleep 3

echo "What the forged agents were told:"
for log in rogue.log forged.log foreign.log; do
  printf '  %-12s %s\n' "$log" "$({ grep -o 'reason=.*retry_in' "$log" || echo '(no answer yet)'; } | tail -n 1 | sed 's/ retry_in$//')"
done
echo
echo "What the panel recorded (every rejection is audited and counted):"
grep -o 'node connection rejected.*' panel.log | sort | uniq -c | head -10
http_get /metrics | grep '^mamba_node' || true

say "The real nodes are still online"
"$bin/api" node list

say "The tenant story, over REST: an admin, a template, a tenant, a server started on us-east-1-node-01"
"$bin/tenant-demo" --panel "http://$PANEL_HTTP_ADDR" --outbox data/outbox --api-bin "$bin/api" \
  --node us-east-1-node-01 --program "$bin/ticker" --key-out "$work/deploy-key.env"

say "A deploy script calls the API with its key (Authorization: Bearer mhp_…)"
# shellcheck disable=SC1091
. "$work/deploy-key.env"
base="http://$PANEL_HTTP_ADDR"
if command -v curl >/dev/null; then
  echo "\$ curl -H 'Authorization: Bearer ${KEY:0:20}…' $base/api/tenants/$TENANT/audit?limit=3"
  curl -sS -H "Authorization: Bearer $KEY" "$base/api/tenants/$TENANT/audit?limit=3"
  echo
  echo "\$ curl -H 'Authorization: Bearer ${KEY:0:20}…' $base/api/auth/me   # an account route"
  curl -sS -H "Authorization: Bearer $KEY" "$base/api/auth/me"
  echo
else
  echo "(curl is not installed: the same request over bash's /dev/tcp)"
  http_get "/api/tenants/$TENANT/audit?limit=3" "Authorization: Bearer $KEY" | tail -n 1
  echo
fi

say "Done: stopping the panel and the agents (logs and certificates stay in data/demo/)"
