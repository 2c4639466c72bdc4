#!/bin/sh
# Latency from a line appended to a followed log file to the address being
# in relayguard's nftables set. relayguard watch runs inside a network
# namespace created here (the host's firewall is never touched). Needs root.
# Usage: bench/guard/latency.sh [N]
set -eu
cd "$(dirname "$0")/../.."
N=${1:-20}
W=$(mktemp -d)
NS=rgbench$$
go build -o "$W/relayguard" ./cmd/relayguard
ip netns add "$NS"
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
cat > "$W/rg.toml" <<EOT
[guard]
maxretry = 1
files = ["$W/mail.log"]
subnet = []
[firewall]
backend = "nftables"
EOT
: > "$W/mail.log"
ip netns exec "$NS" "$W/relayguard" --config "$W/rg.toml" --data-dir "$W/data" watch 2> "$W/watch.log" &
PID=$!
until ip netns exec "$NS" nft list set inet relayguard ban4 >/dev/null 2>&1; do sleep 0.05; done
until grep -q "logwatch: following" "$W/watch.log"; do sleep 0.05; done # positioned at the end
: > "$W/lat.txt"
i=1
while [ "$i" -le "$N" ]; do
	ip="203.0.113.$i"
	t0=$(date +%s%N)
	echo "$(date '+%b %e %H:%M:%S') mx1 postfix/smtpd[1]: warning: unknown[$ip]: SASL LOGIN authentication failed: UGFzc3dvcmQ6" >> "$W/mail.log"
	until ip netns exec "$NS" nft list set inet relayguard ban4 | grep -q "$ip"; do :; done
	t1=$(date +%s%N)
	echo $(( (t1 - t0) / 1000000 )) >> "$W/lat.txt"
	i=$((i + 1))
done
sort -n "$W/lat.txt" | awk '{a[NR]=$1} END {printf "append -> nftables set, %d bans: min %d ms, median %d ms, max %d ms (polling nft by exec adds a few ms)\n", NR, a[1], a[int((NR+1)/2)], a[NR]}'
