#!/usr/bin/env bash
# The two-datacenter lab: network namespaces on one machine, nothing in the root namespace.
#
#   DC-A (10.79.1.0/24)                                   DC-B (10.79.2.0/24)
#   origin .2  ctl .3  a1 .11  a2 .12 …                   b1 .11  b2 .12 …  c1 .21  c2 .22 …
#        \      |      |      /                                \     |       |      /
#        bridge in router "ra" (.1) ── line 10.79.0.1/30 ── 10.79.0.2/30 ── bridge in router "rb" (.1)
#
# Every host has a default route through its datacenter's router; the routers forward between
# the two datacenters over ONE veth pair, "line", shaped by tc tbf on both ends (each direction
# capped at the line rate). The origin's eth0 is shaped too (its egress). Bridges, routers and
# veths all live inside the lab's namespaces: deleting them removes everything, and no route
# leads out of the lab.
#
#   netlab-dc.sh up [--a-workers 2] [--b-workers 2] [--clients 4] [--origin-rate 350MB/s] [--line-rate 100MB/s]
#                                     create (again) the lab; rates in bytes/s (350MB/s, 1GiB/s, 800Mbit/s)
#   netlab-dc.sh down                 stop the processes in the lab's namespaces, remove them (idempotent)
#   netlab-dc.sh exec HOST CMD...     run CMD in HOST (replaces this shell: the pid is CMD's);
#                                     HOST: origin ctl aN bN cN ra rb
#   netlab-dc.sh addr HOST            HOST's IPv4 address
#   netlab-dc.sh status               the line's and the origin's qdiscs with their counters
# Env: FANOUT_LABDC_PREFIX (fd-), FANOUT_LABDC_NET (10.79: first two octets of a free /16).
set -euo pipefail
prefix=${FANOUT_LABDC_PREFIX:-fd-}
net=${FANOUT_LABDC_NET:-10.79}

die() { echo "netlab-dc: $*" >&2; exit 1; }

addr_of() {
  case $1 in
    ra) echo "$net.1.1" ;;
    rb) echo "$net.2.1" ;;
    origin) echo "$net.1.2" ;;
    ctl) echo "$net.1.3" ;;
    a[1-9]) echo "$net.1.$((10 + ${1#a}))" ;;
    b[1-9]) echo "$net.2.$((10 + ${1#b}))" ;;
    c[0-9]*) local i=${1#c}; [ "$i" -ge 1 ] && [ "$i" -le 200 ] || die "bad host $1"; echo "$net.2.$((20 + i))" ;;
    *) die "unknown host: $1" ;;
  esac
}
router_of() { case $1 in origin | ctl | a*) echo ra ;; *) echo rb ;; esac; }
ns_of() { echo "$prefix$1"; }

# "350MB/s" → bits/s for tc (decimal K/M/G, binary Ki/Mi/Gi; "bit" means bits, else bytes).
tc_bits() {
  local s=${1%/s}
  [[ $s =~ ^([0-9.]+)([kKmMgGtT]?)(i?)(bit|b|B|byte)?$ ]] || die "bad rate: $1"
  local n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]} base=1000 exp=0 mul=8
  [ -n "${BASH_REMATCH[3]}" ] && base=1024
  case ${u,,} in k) exp=1 ;; m) exp=2 ;; g) exp=3 ;; t) exp=4 ;; esac
  [[ ${BASH_REMATCH[4]} =~ ^(bit|b)$ ]] && mul=1
  awk -v n="$n" -v b="$base" -v e="$exp" -v m="$mul" 'BEGIN { printf "%.0f", n * b^e * m }'
}

# shape NS DEV RATE: tbf caps everything DEV sends (all flows share one bucket). Burst = 10 ms of
# traffic (at least 256 KiB so GSO super-packets fit), queue up to 50 ms: the 1-second rate seen on
# the link stays within 1% of RATE.
shape() {
  local bits; bits=$(tc_bits "$3")
  local burst=$((bits / 8 / 100)); [ "$burst" -lt 262144 ] && burst=262144
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "${bits}bit" burst "$burst" latency 50ms
}

new_ns() { # new_ns NAME: an empty namespace, loopback up, IPv6 off (no autoconf chatter on the line)
  local ns; ns=$(ns_of "$1")
  ip netns add "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
}

add_router() { # add_router ra|rb: a namespace holding the datacenter's bridge and forwarding
  local ns; ns=$(ns_of "$1")
  new_ns "$1"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" addr add "$(addr_of "$1")/24" dev br0
  ip -n "$ns" link set br0 up
}

add_host() { # add_host NAME [RATE]: eth0 in the host, its peer p-NAME on the router's bridge
  local name=$1 r; r=$(router_of "$1")
  local ns rns; ns=$(ns_of "$name"); rns=$(ns_of "$r")
  new_ns "$name"
  ip -n "$rns" link add "p-$name" type veth peer name eth0 netns "$ns"
  ip -n "$rns" link set "p-$name" master br0 up
  ip -n "$ns" addr add "$(addr_of "$name")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$(addr_of "$r")"
  if [ -n "${2:-}" ]; then shape "$ns" eth0 "$2"; fi
}

add_line() { # add_line RATE: the veth pair between the routers, capped both ways
  local ra rb; ra=$(ns_of ra); rb=$(ns_of rb)
  ip -n "$ra" link add line type veth peer name line netns "$rb"
  ip -n "$ra" addr add "$net.0.1/30" dev line
  ip -n "$rb" addr add "$net.0.2/30" dev line
  ip -n "$ra" link set line up
  ip -n "$rb" link set line up
  ip -n "$ra" route add "$net.2.0/24" via "$net.0.2"
  ip -n "$rb" route add "$net.1.0/24" via "$net.0.1"
  shape "$ra" line "$1"
  shape "$rb" line "$1"
}

lab_namespaces() { ip netns list | awk '{print $1}' | grep "^${prefix}" || true; }

down() {
  local ns pid
  for ns in $(lab_namespaces); do
    # Only processes inside the lab's own namespaces: the ones the benchmark started there.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for ns in $(lab_namespaces); do ip netns del "$ns" 2>/dev/null || true; done
}

up() {
  local aw=2 bw=2 clients=4 origin_rate=350MB/s line_rate=100MB/s
  while [ $# -gt 0 ]; do
    case $1 in
      --a-workers) aw=$2; shift 2 ;;
      --b-workers) bw=$2; shift 2 ;;
      --clients) clients=$2; shift 2 ;;
      --origin-rate) origin_rate=$2; shift 2 ;;
      --line-rate) line_rate=$2; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [ "$aw" -ge 1 ] && [ "$aw" -le 9 ] && [ "$bw" -ge 1 ] && [ "$bw" -le 9 ] || die "1 to 9 workers per datacenter"
  [ "$clients" -ge 1 ] && [ "$clients" -le 200 ] || die "1 to 200 clients"
  [ "$(id -u)" = 0 ] || die "must run as root"
  down
  add_router ra
  add_router rb
  add_line "$line_rate"
  if [ "$origin_rate" = 0 ]; then add_host origin; else add_host origin "$origin_rate"; fi
  add_host ctl
  local i
  for i in $(seq 1 "$aw"); do add_host "a$i"; done
  for i in $(seq 1 "$bw"); do add_host "b$i"; done
  for i in $(seq 1 "$clients"); do add_host "c$i"; done
  echo "netlab-dc: up: DC-A $net.1.0/24 (origin ${origin_rate}, a1..a$aw), DC-B $net.2.0/24 (b1..b$bw, c1..c$clients), line ${line_rate} each way"
}

status() {
  local r
  for r in ra rb; do
    echo "$r line: $(ip netns exec "$(ns_of $r)" cat /sys/class/net/line/statistics/tx_bytes) bytes sent"
    ip netns exec "$(ns_of $r)" tc -s qdisc show dev line | sed 's/^/  /'
  done
  echo "origin:"
  ip netns exec "$(ns_of origin)" tc -s qdisc show dev eth0 | sed 's/^/  /'
}

cmd=${1:-}; shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  addr) [ $# = 1 ] || die "usage: addr HOST"; addr_of "$1" ;;
  exec)
    [ $# -ge 2 ] || die "usage: exec HOST CMD..."
    host=$1; shift
    addr_of "$host" >/dev/null
    exec ip netns exec "$(ns_of "$host")" "$@"
    ;;
  status) status ;;
  *) sed -n '2,22p' "$0" >&2; exit 2 ;;
esac
