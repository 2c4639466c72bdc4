#!/bin/sh
# Benchmark: relayguard report vs pflogsumm 1.1.5 on the same generated
# LINES-line log, one log per workload shape (internal/report/loggen: mail,
# attack, botnet, mixed), in one run, with CPU time and peak RSS from GNU
# time. Each tool runs RUNS times per shape (default 3); the best wall-clock
# and CPU times are reported, since other jobs may share the machine (the
# CPU-time ratio is the steadier one there).
# Usage: [RUNS=3] [SHAPES="mail attack botnet mixed"] bench/report/run.sh [LINES]
# (needs: go, pflogsumm, GNU time). The last line of each shape, starting
# "| report |", is a row for docs/BENCHMARKS.md (bench/run-all.sh uses it).
set -eu
LINES=${1:-1000000}
RUNS=${RUNS:-3}
SHAPES=${SHAPES:-mail attack botnet mixed}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$(dirname "$0")/../.."
go build -o "$W/relayguard" ./cmd/relayguard
go build -o "$W/genlog" ./bench/report/genlog
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
	echo "  $name: ${best_wall}s wall, ${best_cpu}s CPU (user+sys), peak RSS $((rss / 1024)) MB, $(awk -v l="$n" -v s="$best_wall" 'BEGIN{printf "%d", l/s}') lines/s, $(awk -v l="$n" -v s="$best_cpu" 'BEGIN{printf "%d", l/s}') lines/CPU-s"
	echo "$best_wall $best_cpu $((rss / 1024))" > "$W/$name.secs"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); best of $RUNS runs each"
status=0
for shape in $SHAPES; do
	"$W/genlog" -lines "$LINES" -shape "$shape" > "$W/maillog"
	n=$(wc -l < "$W/maillog")
	echo "shape $shape: $n lines, $(du -m "$W/maillog" | cut -f1) MB"
	run pflogsumm pflogsumm
	run relayguard "$W/relayguard" report
	set -- $(cat "$W/pflogsumm.secs") $(cat "$W/relayguard.secs")
	# The Grand Totals must agree. relayguard also counts relayguard
	# serve's own records (the mixed shape has them; pflogsumm does not
	# know them): there, its totals without those lines are compared.
	sed -n '/^Grand Totals/,/recipient hosts/p' "$W/pflogsumm.out" > "$W/p.gt"
	if grep -q ' relayguard\[' "$W/maillog"; then
		grep -v ' relayguard\[' "$W/maillog" | "$W/relayguard" report > "$W/relayguard.out"
	fi
	sed -n '/^Grand Totals/,/recipient hosts/p' "$W/relayguard.out" > "$W/r.gt"
	if cmp -s "$W/p.gt" "$W/r.gt"; then gt=identical; grep -q ' relayguard\[' "$W/maillog" && gt="identical without relayguard's own lines"; else gt=DIFFER; status=1; diff "$W/p.gt" "$W/r.gt" | head -20; fi
	awk -v pw="$1" -v pc="$2" -v pr="$3" -v rw="$4" -v rc="$5" -v rr="$6" -v n="$n" -v shape="$shape" -v gt="$gt" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN{
		printf "  speed-up: %.1fx wall clock, %.1fx CPU time; Grand Totals %s (load average: %s)\n", pw/rw, pc/rc, gt, load
		printf "| report | %s, %d lines | %d lines/s, %.2f s CPU, %d MB | pflogsumm 1.1.5: %d lines/s, %.2f s CPU, %d MB | %.1fx | %.1fx | Grand Totals %s |\n", shape, n, n/rw, rc, rr, n/pw, pc, pr, pw/rw, pc/rc, gt
	}'
done
exit $status
