#!/usr/bin/env bash
# Times `relayguard relaytest` (the whole battery) against a local
# `relayguard serve` in its default configuration, and swaks (Debian package
# swaks) sending the 16 classic relay-scanner forms one connection each
# against the same server. Loopback only. Usage: bench/relaytest/compare.sh [RUNS]
set -euo pipefail
runs=${1:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

(cd "$root" && go build -o "$tmp/relayguard" ./cmd/relayguard)
port=$((20000 + RANDOM % 20000))
cat > "$tmp/relayguard.toml" <<TOML
hostname = "mx.relayguard.test"
local_domains = ["relayguard.test"]
[admin]
listen = ""
[[listener]]
name = "mx"
address = "127.0.0.1:$port"
mode = "mx"
TOML
"$tmp/relayguard" serve --config "$tmp/relayguard.toml" --data-dir "$tmp/data" 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

now() { date +%s.%N; }
echo "server: relayguard serve (default configuration) on 127.0.0.1:$port; $(nproc) cores"
for p in 8 1; do
  for i in $(seq "$runs"); do
    t0=$(now)
    "$tmp/relayguard" relaytest --parallel "$p" "127.0.0.1:$port" >"$tmp/out.txt" || true
    t1=$(now)
    printf 'relayguard relaytest --parallel %s  run %s: %.3f s  %s\n' "$p" "$i" "$(echo "$t1 - $t0" | bc)" "$(tail -1 "$tmp/out.txt")"
  done
done

if ! command -v swaks >/dev/null; then echo "swaks not installed: no comparison"; exit 0; fi
T=relay-target D=relaytest.example F=relay-sender S=mx.relayguard.test IP=127.0.0.1
forms=("<>|$T@$D" "$F@$D|$T@$D" "$F@$S|$T@$D" "$F@[$IP]|$T@$D"
  "$F@[$IP]|$T%$D@[$IP]" "$F@[$IP]|$T%$D@$S" "$F@[$IP]|\"$T@$D\"" "$F@[$IP]|\"$T%$D\""
  "$F@[$IP]|$T@$D@[$IP]" "$F@[$IP]|\"$T@$D\"@[$IP]" "$F@[$IP]|$T@$D@$S" "$F@[$IP]|@[$IP]:$T@$D"
  "$F@[$IP]|@$S:$T@$D" "$F@[$IP]|$D!$T" "$F@[$IP]|$D!$T@[$IP]" "$F@[$IP]|$D!$T@$S")
for i in $(seq "$runs"); do
  accepted=0
  t0=$(now)
  for f in "${forms[@]}"; do
    from=${f%%|*} to=${f#*|}
    [ "$from" = "<>" ] && from=""
    if swaks --server "127.0.0.1:$port" --helo relaytest.example --from "$from" --to "$to" \
        --quit-after RCPT --silent 2 >/dev/null 2>&1; then accepted=$((accepted + 1)); fi
  done
  t1=$(now)
  printf 'swaks, 16 classic forms, one process each  run %s: %.3f s  (%d accepted)\n' "$i" "$(echo "$t1 - $t0" | bc)" "$accepted"
done
