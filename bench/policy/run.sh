#!/bin/bash
# Policy delegation benchmark: relayguard policy vs postfwd (Debian package
# postfwd, postfwd2) on an equivalent rule set, same load, same run.
# Needs root (the list's DNS server binds 127.0.0.153:53 because postfwd's
# Net::DNS only talks to port 53, and it reads only /etc/resolv.conf). Usage: bench/policy/run.sh [duration] [conns]
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-20s}
CONNS=${2:-64}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$TMP/postfwd.pid" ] && postfwd --pidfile "$TMP/postfwd.pid" --kill >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

go build -o "$TMP/relayguard" ./cmd/relayguard
go build -o "$TMP/policybench" ./bench/policy

"$TMP/policybench" -dns 127.0.0.153:53 & PIDS+=($!)
"$TMP/relayguard" --config bench/policy/relayguard.toml --data-dir "$TMP/data" policy --listen 127.0.0.1:10031 & PIDS+=($!)
# postfwd runs in taint mode, where Net::DNS takes only /etc/resolv.conf:
# give it one naming the bench DNS server, in a private mount namespace.
echo "nameserver 127.0.0.153" > "$TMP/resolv.conf"
unshare --mount --propagation private sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$TMP/resolv.conf" \
  postfwd --file "$PWD/bench/policy/postfwd.cf" --interface 127.0.0.1 --port 10040 \
  --pidfile "$TMP/postfwd.pid" --user nobody --group nogroup --perfmon \
  --min_servers "$CONNS" --max_servers "$((CONNS + 8))" --min_spare_servers 4 --max_spare_servers "$CONNS"
for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/10040) 2>/dev/null && break; sleep 1; done; sleep 5

# Warm-up: long enough for every postfwd child to cache all 256 list answers.
WARM=${WARM:-20s}
echo "# $(date -u +%FT%TZ) $(nproc) cores, $CONNS connections, $DUR per server after $WARM warm-up, warm DNS cache"
"$TMP/policybench" -name relayguard -addr 127.0.0.1:10031 -conns "$CONNS" -duration "$DUR" -warmup "$WARM"
"$TMP/policybench" -name postfwd -addr 127.0.0.1:10040 -conns "$CONNS" -duration "$DUR" -warmup "$WARM"
echo "# unloaded latency: 1 connection"
"$TMP/policybench" -name relayguard -addr 127.0.0.1:10031 -conns 1 -duration "$DUR" -warmup 1s
"$TMP/policybench" -name postfwd -addr 127.0.0.1:10040 -conns 1 -duration "$DUR" -warmup 1s
