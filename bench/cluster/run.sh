#!/bin/sh
# Many-nodes benchmark (issue 19 item 6): five `relayguard watch` nodes, each
# a separate process in its own network namespace (its own nftables table
# and sets) with its own data directory, sharing one Redis that runs in a
# hub namespace (a bridge there, a veth to each node; nothing on the host's
# network). Bans are driven through the production path: failing-login lines
# appended to each node's followed log (maxretry 1: one line, one ban).
# Measured (bench/cluster/main.go): the time from a ban's decision on its
# node (Created, in Redis) to its address entering each other node's
# nftables set (netlink monitor per namespace), at RATE new bans/s across
# the cluster; one node stopped under load and restarted: time until its set
# holds every ban decided while it was down; Redis SIGKILLed under load and
# restarted empty: every ban decided meanwhile on every node, none lost.
# Needs root, redis-server, nft. About 2 minutes with the defaults.
# KEEP=1 keeps the work directory (logs of the nodes and Redis).
# Usage: [KEEP=1] [RATE=1000] [STEADY=30s] [DOWN=10s] [OUTAGE=10s] bench/cluster/run.sh
set -eu
cd "$(dirname "$0")/../.."
W=$(mktemp -d)
ID=rgc$$
NODES="1 2 3 4 5"
cleanup() {
	# the processes this script started live in its namespaces
	for i in $NODES; do ip netns pids "$ID-n$i" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
	ip netns pids "$ID-hub" 2>/dev/null | xargs -r kill 2>/dev/null || true
	sleep 0.2
	for i in $NODES; do ip netns del "$ID-n$i" 2>/dev/null || true; done
	ip netns del "$ID-hub" 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT INT TERM
go build -o "$W/relayguard" ./cmd/relayguard
go build -o "$W/cluster" ./bench/cluster
ip netns add "$ID-hub"
ip -n "$ID-hub" link set lo up
ip -n "$ID-hub" link add br0 type bridge
ip -n "$ID-hub" addr add 10.77.0.1/24 dev br0
ip -n "$ID-hub" link set br0 up
list=
for i in $NODES; do
	ns="$ID-n$i"
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip link add "v$ID$i" netns "$ID-hub" type veth peer name eth0 netns "$ns"
	ip -n "$ID-hub" link set "v$ID$i" master br0 up
	ip -n "$ns" addr add "10.77.0.$((i + 10))/24" dev eth0
	ip -n "$ns" link set eth0 up
	list="$list${list:+,}$ns"
done
echo "# $(date -u +%FT%TZ) $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), commit $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$W/cluster" -relayguard "$W/relayguard" -dir "$W" -hub "$ID-hub" -ns "$list" -redis 10.77.0.1:6379 \
	-rate "${RATE:-1000}" -steady "${STEADY:-30s}" -down "${DOWN:-10s}" -outage "${OUTAGE:-10s}" ${CPUPROFILE:+-cpuprofile}
