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
