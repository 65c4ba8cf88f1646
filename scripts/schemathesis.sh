#!/usr/bin/env bash
# Fuzzes every operation of the panel's own /openapi.json with schemathesis (from PyPI, in a
# venv under target/), against the real `api` binary on a loopback port with a logged-in
# platform admin's token: no server error and no response outside the document is allowed.
# logout-all ends every session of its caller, so it runs last, alone, with its own token.
# Prints the status codes each operation answered. Called by scripts/test.sh after the build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/debug"
venv="$root/target/schemathesis-venv"
SCHEMATHESIS_VERSION="4.32.5"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-15}"

if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "schemathesis.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
py="$venv/bin/python"

tmp="$(mktemp -d /tmp/mamba-fuzz.XXXXXX)"
panel_pid=""
cleanup() {
  local status=$?
  set +e
  [ -n "$panel_pid" ] && kill "$panel_pid" 2>/dev/null && wait "$panel_pid" 2>/dev/null
  if [ "$status" -ne 0 ]; then
    # Keep what explains a failure: the panel's log and the recorded traffic.
    rm -rf "$root/target/schemathesis-last"
    cp -r "$tmp" "$root/target/schemathesis-last"
    echo "schemathesis.sh: failed; panel log and HAR files kept in target/schemathesis-last/" >&2
    tail -n 20 "$tmp/panel.log" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

cd "$tmp"
"$bin/dev-ca" --dir certs init >/dev/null
"$bin/dev-ca" --dir certs server localhost 127.0.0.1 >/dev/null
free_port http_port
free_port grpc_port
base="http://127.0.0.1:$http_port"
# The panel (and the CLI) see exactly this environment, never the caller's: a DATABASE_URL
# exported in the shell must not be fuzzed. Development defaults under $tmp.
panel_env=(
  env -i "PATH=$PATH" "HOME=$tmp" RUST_LOG=warn
  "PANEL_HTTP_ADDR=127.0.0.1:$http_port" "PANEL_GRPC_ADDR=127.0.0.1:$grpc_port"
  # One client sends everything: lift the per-user and per-IP limits, or most answers are 429.
  "RATE_LIMITS=api=1000000/1m,login=1000000/1m,register=1000000/1m,verify=1000000/1m,password_reset=1000000/1m"
)
"${panel_env[@]}" "$bin/api" serve >"$tmp/panel.log" 2>&1 &
panel_pid=$!
# HTTP without curl (a fresh machine may lack it): METHOD PATH [BODY] [TOKEN] → the JSON body.
call() {
  "$py" - "$base" "$@" <<'PY'
import json, sys, urllib.error, urllib.request
base, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 and sys.argv[4] else None
request = urllib.request.Request(base + path, data=body, method=method)
request.add_header("content-type", "application/json")
if len(sys.argv) > 5:
    request.add_header("authorization", "Bearer " + sys.argv[5])
try:
    print(urllib.request.urlopen(request, timeout=10).read().decode() or "null")
except urllib.error.HTTPError as e:
    sys.exit(f"{method} {path}: {e.code} {e.read().decode()}")
PY
}
field() { "$py" -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
for _ in $(seq 1 100); do
  call GET /health >/dev/null 2>&1 && break
  kill -0 "$panel_pid" 2>/dev/null || { echo "schemathesis.sh: the panel exited" >&2; exit 1; }
  sleep 0.1
done

# A verified platform admin with a tenant, logged in three times: one token for everything, one
# whose sessions the stateful phase ends (it reads the caller's sessions and deletes them), one for
# logout-all.
email="fuzz-admin@example.com" password="correct horse battery staple"
credentials="{\"email\":\"$email\",\"password\":\"$password\"}"
call POST /api/auth/register "$credentials" >/dev/null
token="$("$py" - data/outbox <<'PY'
import email, pathlib, re, sys
mail = email.message_from_bytes(next(pathlib.Path(sys.argv[1]).glob("*.eml")).read_bytes())
parts = mail.walk() if mail.is_multipart() else [mail]
body = "".join((p.get_payload(decode=True) or b"").decode() for p in parts if not p.is_multipart())
print(re.search(r"token=([A-Za-z0-9_-]+)", body).group(1))
PY
)"
call POST /api/auth/verify-email "{\"token\":\"$token\"}" >/dev/null
"${panel_env[@]}" "$bin/api" admin grant "$email" >/dev/null
access="$(call POST /api/auth/login "$credentials" | field access_token)"
sessions="$(call POST /api/auth/login "$credentials" | field access_token)"
last="$(call POST /api/auth/login "$credentials" | field access_token)"
tid="$(call POST /api/tenants '{"name":"Fuzzed"}' "$access" | field id)"
uid="$(call GET /api/auth/me "" "$access" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])')"
call PUT "/api/tenants/$tid/secrets/fuzz-secret" '{"value":"fuzzed"}' "$access" >/dev/null
call GET /openapi.json >"$tmp/openapi.json"
# Random ids only ever reach 404: a second pass over the tenant's routes uses real ones.
cp "$root/scripts/schemathesis.toml" "$tmp/known-ids.toml"
cat >>"$tmp/known-ids.toml" <<EOF
[parameters]
"path.tid" = "$tid"
"path.uid" = "$uid"
"path.name" = "fuzz-secret"
EOF

# One worker: hypothesis parses lambda sources with `ast.parse`, which CPython 3.11 before 3.11.8
# can fail from two threads at once ("AST constructor recursion depth mismatch"). Every check,
# and the stateful phase, which follows the document's links (create → read → update → delete).
BASE_CONFIG=(--config-file "$root/scripts/schemathesis.toml")
ST_CONFIG=("${BASE_CONFIG[@]}")
PHASES=examples,coverage,fuzzing,stateful
run() {
  "$venv/bin/st" "${ST_CONFIG[@]}" run "$base/openapi.json" \
    --checks all \
    --max-examples "$EXAMPLES" --seed 20261123 --phases "$PHASES" \
    --request-timeout 10 --workers 1 --no-color --warnings off \
    --report har --report-dir "$tmp" "$@"
}
status=0
run --exclude-path /api/auth/logout-all --exclude-path /api/auth/sessions/{id} \
  -H "Authorization: Bearer $access" \
  --report-har-path "$tmp/1-random-ids.har" || status=$?
ST_CONFIG=(--config-file "$tmp/known-ids.toml")
run --include-path-regex '^/api/tenants/[{]tid[}]' --exclude-operation-id delete_api_tenants_tid \
  -H "Authorization: Bearer $access" --report-har-path "$tmp/2-known-ids.har" || status=$?
# What ends the tenant, the sessions, then every session, last.
PHASES=examples,coverage,fuzzing
run --include-operation-id delete_api_tenants_tid -H "Authorization: Bearer $access" \
  --report-har-path "$tmp/3-tenant-delete.har" || status=$?
ST_CONFIG=("${BASE_CONFIG[@]}")
PHASES=examples,coverage,fuzzing,stateful
run --include-path /api/auth/sessions --include-path /api/auth/sessions/{id} \
  -H "Authorization: Bearer $sessions" --report-har-path "$tmp/4-sessions.har" || status=$?
PHASES=examples,coverage,fuzzing
run --include-path /api/auth/logout-all -H "Authorization: Bearer $last" \
  --report-har-path "$tmp/5-logout-all.har" || status=$?

# The status codes each operation answered, from the recorded traffic.
"$py" "$root/scripts/schemathesis-summary.py" "$tmp/openapi.json" "$tmp"/[1-5]-*.har
exit "$status"
