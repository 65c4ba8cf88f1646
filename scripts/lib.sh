# Shared by the scripts: sourced, not run.

# free_port NAME: sets NAME to a loopback TCP port nothing listens on and that this script has
# not been given yet (nothing binds between two calls, so the check alone could hand out one
# port twice). A variable, not $(…), so the ports given are remembered. Ports are taken below
# the kernel's ephemeral range (ip_local_port_range), which outgoing connections draw their
# source ports from: a port in it can be taken by any client between the check and the bind.
free_port() {
  local port low=32768 span
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  span=$((low - 10000))
  [ "$span" -ge 1000 ] || { low=60000; span=5000; }
  while :; do
    port=$((low - 1 - RANDOM % span))
    case " ${FREE_PORTS_GIVEN:-} " in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      FREE_PORTS_GIVEN="${FREE_PORTS_GIVEN:-} $port"
      printf -v "$1" '%s' "$port"
      return
    fi
  done
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
# PostgreSQL runs as the postgres user when we are root (initdb refuses root).
run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# start_services DIR: redis-server and PostgreSQL (fsync off) on free loopback ports, their
# files under DIR. Sets SERVICES_REDIS_URL, SERVICES_POSTGRES_URL and what stop_services needs.
start_services() {
  local dir="$1" redis_port pg_port pg_user
  pg_user="$(id -un)"
  [ "$(id -u)" -eq 0 ] && pg_user=postgres
  free_port redis_port
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" &
  SERVICES_REDIS_PID=$!
  free_port pg_port
  SERVICES_PG_DIR="$dir/pg"
  mkdir -p "$dir/pg" "$dir/pgsock"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg" "$dir/pgsock"
  run_pg "$(pg_bin)/initdb" -D "$dir/pg" -U "$pg_user" --auth=trust -E UTF8 >/dev/null
  run_pg "$(pg_bin)/pg_ctl" -D "$dir/pg" -l "$dir/pgsock/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pgsock -c fsync=off" start >/dev/null
  wait_port "127.0.0.1:$redis_port"
  SERVICES_POSTGRES_URL="postgres://$pg_user@127.0.0.1:$pg_port/postgres"
  SERVICES_REDIS_URL="redis://127.0.0.1:$redis_port/"
}

# stop_services: stops what start_services started (safe to call twice, or before it ran).
stop_services() {
  if [ -n "${SERVICES_REDIS_PID:-}" ]; then
    kill "$SERVICES_REDIS_PID" 2>/dev/null && wait "$SERVICES_REDIS_PID" 2>/dev/null
    SERVICES_REDIS_PID=""
  fi
  if [ -n "${SERVICES_PG_DIR:-}" ] && [ -f "$SERVICES_PG_DIR/postmaster.pid" ]; then
    run_pg "$(pg_bin)/pg_ctl" -D "$SERVICES_PG_DIR" -m immediate stop >/dev/null 2>&1
  fi
  return 0
}

# wait_port HOST:PORT [TENTHS]: until something listens there (5 s by default).
wait_port() {
  local _
  for _ in $(seq 1 "${2:-50}"); do
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
