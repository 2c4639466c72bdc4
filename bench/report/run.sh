#!/bin/sh
# Benchmark: relayguard report vs pflogsumm 1.1.5 on the same generated
# 1,000,000-line Postfix log, in one run, with peak RSS from GNU time.
# Each tool runs RUNS times (default 3); the best wall-clock and CPU times
# are reported, since other jobs may share the machine.
# Usage: bench/report/run.sh [LINES]   (needs: go, pflogsumm, time)
set -eu
LINES=${1:-1000000}
RUNS=${RUNS:-3}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$(dirname "$0")/../.."
go build -o "$W/relayguard" ./cmd/relayguard
go run ./bench/report/genlog -lines "$LINES" > "$W/maillog"
echo "log: $(wc -l < "$W/maillog") lines, $(du -m "$W/maillog" | cut -f1) MB; best of $RUNS runs each"
run() {
	name=$1; shift
	best_wall=999999; best_cpu=999999; rss=0
	i=0
	while [ "$i" -lt "$RUNS" ]; do
		i=$((i + 1))
		/usr/bin/time -v "$@" "$W/maillog" > "$W/$name.out" 2> "$W/$name.time"
		wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$W/$name.time")
		cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$W/$name.time")
		r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$W/$name.time")
		best_wall=$(awk -v a="$best_wall" -v b="$wall" 'BEGIN{print (b<a)?b:a}')
		best_cpu=$(awk -v a="$best_cpu" -v b="$cpu" 'BEGIN{print (b<a)?b:a}')
		rss=$(awk -v a="$rss" -v b="$r" 'BEGIN{print (b>a)?b:a}')
	done
	echo "$name: ${best_wall}s wall, ${best_cpu}s CPU (user+sys), peak RSS $((rss / 1024)) MB, $(awk -v l="$LINES" -v s="$best_wall" 'BEGIN{printf "%d", l/s}') lines/s"
	echo "$best_wall $best_cpu" > "$W/$name.secs"
}
run pflogsumm pflogsumm
run relayguard "$W/relayguard" report
set -- $(cat "$W/pflogsumm.secs") $(cat "$W/relayguard.secs")
awk -v pw="$1" -v pc="$2" -v rw="$3" -v rc="$4" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" \
	'BEGIN{printf "speed-up: %.1fx wall clock, %.1fx CPU time (load average: %s)\n", pw/rw, pc/rc, load}'
# The Grand Totals must agree.
sed -n '/^Grand Totals/,/recipient hosts/p' "$W/pflogsumm.out" > "$W/p.gt"
sed -n '/^Grand Totals/,/recipient hosts/p' "$W/relayguard.out" > "$W/r.gt"
if cmp -s "$W/p.gt" "$W/r.gt"; then echo "Grand Totals: identical"; else echo "Grand Totals DIFFER"; diff "$W/p.gt" "$W/r.gt"; exit 1; fi
