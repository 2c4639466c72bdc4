#!/bin/bash
# DNS-list decisions behind a real caching resolver (issue 13): `relayguard
# policy` with 10 zones, NSD behind unbound (started by dnsblbench on loopback
# ports), 100,000 distinct clients per run; relayguard now against relayguard
# before issue 13 ($OLD, the comparison), same load, same machine, same run.
# Usage: bench/dnsbl/run.sh   (about 30 minutes on a shared 2-core machine; needs nsd and unbound)
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
NEW=("$TMP/dnsblbench" -bin "$TMP/relayguard" -conns "$CONNS")
PREV=("$TMP/dnsblbench" -bin "$TMP/relayguard-old" -conns "$CONNS")

echo "# $(date -u +%FT%TZ) $(nproc) cores; old = $OLD"
for shape in "10000 0.3" "2000 0.6"; do
	set -- $shape
	echo "## shape: 100000 clients, $1 hot, $2 of requests from new clients"
	"${NEW[@]}" -name new-default -hot "$1" -tail "$2"
	"${NEW[@]}" -name new-25k -hot "$1" -tail "$2" -cache 25000
	"${PREV[@]}" -name old-25k -hot "$1" -tail "$2" -cache 25000 -cache-in-answers
done
echo "## one of the 10 zones stops answering 30 s into the run (timeout 5 s)"
"${NEW[@]}" -name new-kill -hot 10000 -tail 0.3 -kill-zone-at 30s -kill-for 30s
"${PREV[@]}" -name old-kill -hot 10000 -tail 0.3 -kill-zone-at 30s -kill-for 30s
echo "## cache memory at the default size (500,000 clients, 10 zones)"
go test -run '^$' -bench CacheMemory -benchtime 1x ./internal/dnsbl | grep Benchmark
