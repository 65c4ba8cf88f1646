# Shared by the scripts: sourced, not run.

# free_port NAME: sets NAME to a loopback TCP port nothing listens on and that this script has
# not been given yet (nothing binds between two calls, so the check alone could hand out one
# port twice). A variable, not $(…), so the ports given are remembered.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    case " ${FREE_PORTS_GIVEN:-} " in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      FREE_PORTS_GIVEN="${FREE_PORTS_GIVEN:-} $port"
      printf -v "$1" '%s' "$port"
      return
    fi
  done
}
