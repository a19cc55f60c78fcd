#!/usr/bin/env bash
# The benchmarks' multi-host lab: network namespaces on one machine, joined by a bridge in the
# root namespace. Hosts: "origin" (.2) and h1..hN (.11 on). No route leaves the lab.
#
#   netlab.sh up N [--origin-rate RATE] [--host-rate RATE]   create (again) the lab; RATE in bytes/s:
#                                                            350MB/s, 1GiB/s, 800Mbit/s; tc tbf caps
#                                                            everything that host sends, all flows together
#   netlab.sh down                                           remove it (idempotent)
#   netlab.sh exec HOST CMD...                               run CMD in HOST (replaces this shell: the pid is CMD's)
#   netlab.sh addr HOST                                      HOST's IPv4 address
#   netlab.sh status                                         hosts and their qdisc byte counters
# Env: FANOUT_LAB_PREFIX (fl-), FANOUT_LAB_NET (10.78.0: first three octets of a free /24).
set -euo pipefail
prefix=${FANOUT_LAB_PREFIX:-fl-}
net=${FANOUT_LAB_NET:-10.78.0}
bridge="${prefix}br"

ns_of() { echo "${prefix}$1"; }
addr_of() {
  case $1 in
    root) echo "$net.1" ;;
    origin) echo "$net.2" ;;
    h[0-9]*) echo "$net.$((10 + ${1#h}))" ;;
    *) echo "unknown host: $1" >&2; exit 2 ;;
  esac
}

# "350MB/s" → bytes/s (decimal K/M/G, binary Ki/Mi/Gi, "bit" divides by 8).
to_bytes() {
  python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r'\s*([\d.]+)\s*([kmgt]?)(i?)(bit|b|byte)?(/s)?\s*', sys.argv[1], re.I)
if not m: sys.exit(f"bad rate: {sys.argv[1]}")
n = float(m[1]) * ((1024 if m[3] else 1000) ** ' kmgt'.index((m[2] or ' ').lower()))
print(int(n / 8 if (m[4] or '').lower() == 'bit' else n))
PY
}

cap() { # cap NS DEV RATE: tbf on the host's own end, so it limits what the host sends
  local bytes; bytes=$(to_bytes "$3")
  local burst=$(( bytes / 50 > 65536 ? bytes / 50 : 65536 ))  # 20 ms of traffic
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "${bytes}bps" burst "$burst" latency 50ms
}

add_host() { # add_host NAME [RATE]
  local ns; ns=$(ns_of "$1"); local a; a=$(addr_of "$1")
  local peer="${prefix}v$1"
  ip netns add "$ns"
  ip link add "$peer" type veth peer name eth0 netns "$ns"
  ip link set "$peer" master "$bridge" up
  ip netns exec "$ns" ip addr add "$a/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
  if [ -n "${2:-}" ]; then cap "$ns" eth0 "$2"; fi
}

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^${prefix}" || true); do ip netns del "$ns"; done
  ip link del "$bridge" 2>/dev/null || true
}

case ${1:-} in
  up)
    n=${2:?usage: netlab.sh up N [--origin-rate RATE] [--host-rate RATE]}; shift 2
    origin_rate=''; host_rate=''
    while [ $# -gt 0 ]; do
      case $1 in
        --origin-rate) origin_rate=$2; shift 2 ;;
        --host-rate) host_rate=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
      esac
    done
    [ "$origin_rate" = 0 ] && origin_rate=''
    [ "$host_rate" = 0 ] && host_rate=''
    down
    ip link add "$bridge" type bridge
    ip addr add "$net.1/24" dev "$bridge"
    ip link set "$bridge" up
    add_host origin "$origin_rate"
    for i in $(seq 1 "$n"); do add_host "h$i" "$host_rate"; done
    ;;
  down) down ;;
  exec)
    host=${2:?usage: netlab.sh exec HOST CMD...}; shift 2
    if [ "$host" = root ]; then exec "$@"; fi
    exec ip netns exec "$(ns_of "$host")" "$@"
    ;;
  addr) addr_of "${2:?usage: netlab.sh addr HOST}" ;;
  status)
    for ns in $(ip netns list | awk '{print $1}' | grep "^${prefix}" | sort || true); do
      echo "${ns#"$prefix"} $(ip netns exec "$ns" ip -4 -o addr show eth0 | awk '{print $4}')"
      ip netns exec "$ns" tc -s qdisc show dev eth0 | sed 's/^/  /'
    done
    ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
