#!/bin/bash
# DNS-list decisions behind a real caching resolver (issue 13): `relayguard
# policy` with 10 zones, NSD behind unbound (started by dnsblbench on loopback
# ports), 100,000 distinct clients per run. Each dnsblbench call runs its
# relayguards side by side against the same resolver, so that they share the
# machine's noise: a cache smaller than the clients (it fills and evicts)
# against the default size (it never fills); relayguard before issue 13
# ($OLD, the comparison) with the small cache; then a zone killed mid-run
# under both.
# Usage: bench/dnsbl/run.sh   (about 20 minutes; needs nsd and unbound)
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=${OLD:-d0be51b}
CONNS=${CONNS:-32}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
go build -o "$TMP/relayguard" ./cmd/relayguard
go build -o "$TMP/dnsblbench" ./bench/dnsbl
mkdir "$TMP/old"
git archive "$OLD" | tar -x -C "$TMP/old"
(cd "$TMP/old" && go build -o "$TMP/relayguard-old" ./cmd/relayguard)
NEW=$TMP/relayguard
PREV=$TMP/relayguard-old
B=("$TMP/dnsblbench" -conns "$CONNS")

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uptime | sed 's/.*load/load/'); old = $OLD"
for shape in "10000 0.5" "2000 0.8"; do
	set -- $shape
	echo "## shape: 100000 clients, $1 hot, $2 of requests from new clients"
	"${B[@]}" -hot "$1" -tail "$2" -run new-default="$NEW" -run new-25k="$NEW:25000"
	# Before issue 13 cache_size counted answers (here 25000 clients x 10
	# zones). Alone: a full cache there burns a core, which would slow a
	# neighbour as much as itself.
	"${B[@]}" -hot "$1" -tail "$2" -run old-25k="$PREV:25000:answers"
done
echo "## one of the 10 zones stops answering 30 s into the run (timeout 5 s)"
# The old one with a cache that never fills (120000 clients x 10 answers).
"${B[@]}" -hot 10000 -tail 0.5 -kill-zone-at 30s -kill-for 30s -run new-kill="$NEW" -run old-kill="$PREV:120000:answers"
echo "## cache memory at the default size (500,000 clients, 10 zones)"
go test -run '^$' -bench CacheMemory -benchtime 1x ./internal/dnsbl | grep Benchmark
