#!/bin/sh
# Benchmark: relayguard report vs pflogsumm 1.1.5 on the same generated
# LINES-line log, one log per workload shape (internal/report/loggen: mail,
# attack, botnet, mixed), in one run, with CPU time and peak RSS from GNU
# time. Each tool runs RUNS times per shape (default 3), the two tools
# alternating (pflogsumm, relayguard, pflogsumm, ...): this machine's speed
# drifts by up to 2x over tens of seconds, and a tool whose runs all fall in
# one slow stretch (relayguard's five runs take 2 s, pflogsumm's 35 s) would
# be measured on that stretch alone. The best wall-clock and CPU times are
# reported, since other jobs may share the machine (the CPU-time ratio is
# the steadier one there), and the ratios of the medians beside them.
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
# once NAME COMMAND...: one timed run of COMMAND on the log; its wall, CPU
# (user+sys) and peak RSS (KB) are added to $W/NAME.runs.
once() {
	name=$1; shift
	/usr/bin/time -v "$@" "$W/maillog" > "$W/$name.out" 2> "$W/$name.time"
	awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); w=0; for(i=1;i<=n;i++) w=w*60+a[i]}
		/User time|System time/ {c+=$2}
		/Maximum resident set size/ {r=$2}
		END {print w, c, r}' "$W/$name.time" >> "$W/$name.runs"
}
# summary NAME: prints NAME's line and writes "best-wall best-cpu peak-MB
# median-wall median-cpu" to $W/NAME.secs.
summary() {
	name=$1
	set -- $(awk '{print $1}' "$W/$name.runs" | sort -g | awk '{v[NR]=$1} END {print v[1], v[int((NR+1)/2)]}') \
		$(awk '{print $2}' "$W/$name.runs" | sort -g | awk '{v[NR]=$1} END {print v[1], v[int((NR+1)/2)]}') \
		$(awk '{if ($3>m) m=$3} END {print int(m/1024)}' "$W/$name.runs")
	echo "  $name: ${1}s wall, ${3}s CPU (user+sys), peak RSS $5 MB, $(awk -v l="$n" -v s="$1" 'BEGIN{printf "%d", l/s}') lines/s, $(awk -v l="$n" -v s="$3" 'BEGIN{printf "%d", l/s}') lines/CPU-s (best of $RUNS; medians ${2}s wall, ${4}s CPU)"
	echo "$1 $3 $5 $2 $4" > "$W/$name.secs"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); best of $RUNS runs each, the two tools alternating"
status=0
for shape in $SHAPES; do
	"$W/genlog" -lines "$LINES" -shape "$shape" > "$W/maillog"
	n=$(wc -l < "$W/maillog")
	echo "shape $shape: $n lines, $(du -m "$W/maillog" | cut -f1) MB"
	rm -f "$W/pflogsumm.runs" "$W/relayguard.runs"
	i=0
	while [ "$i" -lt "$RUNS" ]; do
		i=$((i + 1))
		once pflogsumm pflogsumm
		once relayguard "$W/relayguard" report
	done
	summary pflogsumm
	summary relayguard
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
	awk -v pw="$1" -v pc="$2" -v pr="$3" -v pmw="$4" -v pmc="$5" -v rw="$6" -v rc="$7" -v rr="$8" -v rmw="$9" -v rmc="${10}" -v n="$n" -v shape="$shape" -v gt="$gt" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN{
		printf "  speed-up: %.1fx wall clock, %.1fx CPU time (medians: %.1fx, %.1fx); Grand Totals %s (load average: %s)\n", pw/rw, pc/rc, pmw/rmw, pmc/rmc, gt, load
		printf "| report | %s, %d lines | %d lines/s, %.2f s CPU, %d MB | pflogsumm 1.1.5: %d lines/s, %.2f s CPU, %d MB | %.1fx | %.1fx | medians %.1fx wall, %.1fx CPU; Grand Totals %s |\n", shape, n, n/rw, rc, rr, n/pw, pc, pr, pw/rw, pc/rc, pmw/rmw, pmc/rmc, gt
	}'
done
exit $status
