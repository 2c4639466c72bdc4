#!/bin/bash
# Send limits in the policy service: relayguard policy counting per
# sasl_username (once per message, in SQLite and in Redis, with the
# accounts' detection on) against postfwd's rate() per sasl_username, on the
# same authenticated load, same run. Two shapes: 10 logins sending 1
# recipient per message, and 10,000 logins sending 5 recipients per message.
# Needs root (postfwd drops to nobody) and redis-server.
# Usage: bench/policy/limits.sh [duration] [conns]
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
# Ports chosen by the kernel (other benchmarks may run on this machine).
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RP=$(freeport) SQ=$(freeport) RD=$(freeport) PF=$(freeport)

go build -o "$TMP/relayguard" ./cmd/relayguard
go build -o "$TMP/policybench" ./bench/policy
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null & PIDS+=($!)
mkdir -p "$TMP/sqlite" "$TMP/redis"
"$TMP/relayguard" --config bench/policy/limits.toml --data-dir "$TMP/sqlite" policy --listen "127.0.0.1:$SQ" & PIDS+=($!)
{ cat bench/policy/limits.toml; printf '\n[store]\nurl = "redis://127.0.0.1:%s/0"\n' "$RP"; } >"$TMP/redis.toml"
"$TMP/relayguard" --config "$TMP/redis.toml" --data-dir "$TMP/redis" policy --listen "127.0.0.1:$RD" & PIDS+=($!)
postfwd --file "$PWD/bench/policy/postfwd-limits.cf" --interface 127.0.0.1 --port "$PF" \
	--pidfile "$TMP/postfwd.pid" --user nobody --group nogroup \
	--min_servers "$CONNS" --max_servers "$((CONNS + 8))" --min_spare_servers 4 --max_spare_servers "$CONNS"
for p in $SQ $RD $PF; do
	for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 1; done
done
sleep 3

WARM=${WARM:-5s}
echo "# $(date -u +%FT%TZ) $(nproc) cores, $CONNS connections, $DUR per server after $WARM warm-up"
for shape in "10 1" "10000 5"; do
	set -- $shape
	echo "# $1 logins, $2 recipient(s) per message"
	"$TMP/policybench" -name relayguard-sqlite -addr "127.0.0.1:$SQ" -conns "$CONNS" -duration "$DUR" -warmup "$WARM" -users "$1" -rcpts "$2"
	"$TMP/policybench" -name relayguard-redis -addr "127.0.0.1:$RD" -conns "$CONNS" -duration "$DUR" -warmup "$WARM" -users "$1" -rcpts "$2"
	"$TMP/policybench" -name postfwd-rate -addr "127.0.0.1:$PF" -conns "$CONNS" -duration "$DUR" -warmup "$WARM" -users "$1" -rcpts "$2"
done
