#!/bin/sh
# Guard benchmark: lines per second, CPU time and peak RSS of `relayguard
# watch --replay` against fail2ban-regex on the same generated log, in the
# same run, for each workload shape:
#   guard   bench/guard/gen's log (2,000 attackers among normal traffic):
#           relayguard's bans must equal fail2ban-regex's matches and the
#           generator's attackers, address for address;
#   attack, botnet, mixed   internal/report/loggen's internet-scale shapes
#           (hundreds of thousands of distinct addresses; mixed adds Dovecot
#           and relayguard serve's own lines): fail2ban-regex's matched
#           addresses must equal the generator's failing addresses, and every
#           relayguard ban must be one of them (a one-shot address stays
#           under the threshold, so relayguard bans fewer).
# fail2ban-regex runs postfix[mode=auth], plus dovecot on the mixed shape
# (its CPU times summed). relayguard runs RUNS times (default 3), its best
# run counts; fail2ban-regex once.
# Usage: [RUNS=3] [SHAPES="guard attack botnet mixed"] bench/guard/run.sh [LINES]
# The last line of each shape, starting "| watch --replay |", is a row for
# docs/BENCHMARKS.md (bench/run-all.sh uses it).
set -eu
cd "$(dirname "$0")/../.."
LINES=${1:-1000000}
SHAPES=${SHAPES:-guard attack botnet mixed}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
go build -o "$W/relayguard" ./cmd/relayguard
go build -o "$W/gen" ./bench/guard/gen
go build -o "$W/genlog" ./bench/report/genlog
echo "# $(date -u +%FT%TZ) $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# GNU time: wall, user, sys, peak RSS (KB)
tfmt='%e %U %S %M'
status=0
for shape in $SHAPES; do
	rm -rf "$W/data"
	if [ "$shape" = guard ]; then
		"$W/gen" -lines "$LINES" -o "$W/mail.log" -offenders "$W/truth.txt"
	else
		"$W/genlog" -lines "$LINES" -shape "$shape" -failing "$W/truth.txt" > "$W/mail.log"
	fi
	n=$(wc -l < "$W/mail.log")
	sort -u "$W/truth.txt" > "$W/truth.ips"
	echo "shape $shape: $n lines, $(du -m "$W/mail.log" | cut -f1) MB, $(wc -l < "$W/truth.ips") distinct failing addresses"
	# Same conditions for both: the log written out and in the page cache.
	sync
	cat "$W/mail.log" > /dev/null

	rg=999999; rgcpu=999999; rgrss=0
	i=0
	while [ "$i" -lt "${RUNS:-3}" ]; do
		i=$((i + 1))
		rm -rf "$W/data"
		/usr/bin/time -f "$tfmt" -o "$W/rg.time" "$W/relayguard" --config bench/guard/bench.toml --data-dir "$W/data" --create-data-dir watch --replay --json "$W/mail.log" > "$W/rg.json" 2> "$W/rg.log"
		read -r w u s m < "$W/rg.time"
		rg=$(awk -v a="$rg" -v b="$w" 'BEGIN{print (b < a) ? b : a}')
		rgcpu=$(awk -v a="$rgcpu" -v b="$u" -v c="$s" 'BEGIN{print (b + c < a) ? b + c : a}')
		rgrss=$(awk -v a="$rgrss" -v b="$m" 'BEGIN{print (b > a) ? b : a}')
	done

	filters='postfix[mode=auth]'
	[ "$shape" = mixed ] && filters="$filters dovecot"
	f2b=0; f2bcpu=0; f2brss=0
	: > "$W/f2b.txt"
	for f in $filters; do
		/usr/bin/time -f "$tfmt" -o "$W/f2b.time" fail2ban-regex -o ip "$W/mail.log" "$f" >> "$W/f2b.txt"
		read -r w u s m < "$W/f2b.time"
		f2b=$(awk -v a="$f2b" -v b="$w" 'BEGIN{print a + b}')
		f2bcpu=$(awk -v a="$f2bcpu" -v b="$u" -v c="$s" 'BEGIN{print a + b + c}')
		f2brss=$(awk -v a="$f2brss" -v b="$m" 'BEGIN{print (b > a) ? b : a}')
	done

	# relayguard bans /32 and /128 prefixes; fail2ban prints addresses.
	sed -n 's/.*"prefix":"\([^"]*\)\/[0-9]*".*/\1/p' "$W/rg.json" | sort -u > "$W/rg.ips"
	grep -v '^$' "$W/f2b.txt" | sort -u > "$W/f2b.ips"
	printf '  relayguard watch --replay: %6.2f s wall %9.0f lines/s; %6.2f s CPU %9.0f lines/CPU-s; peak RSS %d MB; %d bans (best of %d)\n' "$rg" "$(echo "$n / $rg" | bc -l)" "$rgcpu" "$(echo "$n / $rgcpu" | bc -l)" $((rgrss / 1024)) "$(wc -l < "$W/rg.ips")" "${RUNS:-3}"
	printf '  fail2ban-regex %s: %6.2f s wall %9.0f lines/s; %6.2f s CPU %9.0f lines/CPU-s; peak RSS %d MB; %d matches, %d addresses\n' "$filters" "$f2b" "$(echo "$n / $f2b" | bc -l)" "$f2bcpu" "$(echo "$n / $f2bcpu" | bc -l)" $((f2brss / 1024)) "$(wc -l < "$W/f2b.txt")" "$(wc -l < "$W/f2b.ips")"
	if [ "$shape" = guard ]; then
		if cmp -s "$W/rg.ips" "$W/f2b.ips" && cmp -s "$W/rg.ips" "$W/truth.ips"; then
			check="same $(wc -l < "$W/rg.ips") offenders as fail2ban and the generator"
		else
			check="offenders DIFFER"; status=1; diff "$W/rg.ips" "$W/f2b.ips" | head -20
		fi
	else
		extra=$(comm -23 "$W/rg.ips" "$W/truth.ips" | wc -l)
		f2bextra=$(comm -23 "$W/f2b.ips" "$W/truth.ips" | wc -l)
		if cmp -s "$W/f2b.ips" "$W/truth.ips" && [ "$extra" -eq 0 ]; then
			check="fail2ban matched the generator's $(wc -l < "$W/truth.ips") failing addresses; relayguard banned $(wc -l < "$W/rg.ips") of them, no other"
		elif [ "$shape" = mixed ] && [ "$f2bextra" -eq 0 ] && [ "$extra" -eq 0 ]; then
			# relayguard serve's own failed logins are in the generator's
			# list, and no fail2ban filter reads them.
			check="fail2ban matched $(wc -l < "$W/f2b.ips") of the generator's $(wc -l < "$W/truth.ips") failing addresses (not relayguard serve's own records), no other; relayguard banned $(wc -l < "$W/rg.ips") of them, no other"
		else
			check="addresses DIFFER (fail2ban $(wc -l < "$W/f2b.ips") vs generator $(wc -l < "$W/truth.ips"), $f2bextra not failing; $extra relayguard bans not failing)"; status=1
		fi
	fi
	echo "  $check"
	awk -v fw="$f2b" -v fc="$f2bcpu" -v fr="$((f2brss / 1024))" -v rw="$rg" -v rc="$rgcpu" -v rr="$((rgrss / 1024))" -v n="$n" -v shape="$shape" -v check="$check" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN{
		printf "  speed-up: %.1fx wall clock, %.1fx CPU time (load average: %s)\n", fw/rw, fc/rc, load
		printf "| watch --replay | %s, %d lines | %d lines/s, %.2f s CPU, %d MB | fail2ban-regex: %d lines/s, %.2f s CPU, %d MB | %.1fx | %.1fx | %s |\n", shape, n, n/rw, rc, rr, n/fw, fc, fr, fw/rw, fc/rc, check
	}'
done
exit $status
