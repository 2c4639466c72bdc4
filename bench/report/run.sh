#!/bin/sh
# Benchmark: relayguard report vs pflogsumm 1.1.5 on the same generated
# 1,000,000-line Postfix log, in one run, with peak RSS from GNU time.
# Usage: bench/report/run.sh [LINES]   (needs: go, pflogsumm, time)
set -eu
LINES=${1:-1000000}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$(dirname "$0")/../.."
go build -o "$W/relayguard" ./cmd/relayguard
go run ./bench/report/genlog -lines "$LINES" > "$W/maillog"
echo "log: $(wc -l < "$W/maillog") lines, $(du -m "$W/maillog" | cut -f1) MB"
run() {
	name=$1; shift
	/usr/bin/time -v "$@" "$W/maillog" > "$W/$name.out" 2> "$W/$name.time"
	secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$W/$name.time")
	cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$W/$name.time")
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$W/$name.time")
	echo "$name: ${secs}s wall, ${cpu}s CPU (user+sys), peak RSS $((rss / 1024)) MB, $(awk -v l="$LINES" -v s="$cpu" 'BEGIN{printf "%d", l/s}') lines per CPU second"
	echo "$secs $cpu" > "$W/$name.secs"
}
run pflogsumm pflogsumm
run relayguard "$W/relayguard" report
set -- $(cat "$W/pflogsumm.secs") $(cat "$W/relayguard.secs")
awk -v pw="$1" -v pc="$2" -v rw="$3" -v rc="$4" 'BEGIN{printf "speed-up: %.1fx CPU time, %.1fx wall clock (load: %s)\n", pc/rc, pw/rw, ARGV[1]}' "$(cut -d' ' -f1-3 /proc/loadavg)"
# The Grand Totals must agree.
sed -n '/^Grand Totals/,/recipient hosts/p' "$W/pflogsumm.out" > "$W/p.gt"
sed -n '/^Grand Totals/,/recipient hosts/p' "$W/relayguard.out" > "$W/r.gt"
if cmp -s "$W/p.gt" "$W/r.gt"; then echo "Grand Totals: identical"; else echo "Grand Totals DIFFER"; diff "$W/p.gt" "$W/r.gt"; exit 1; fi
