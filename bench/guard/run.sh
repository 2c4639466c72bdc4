#!/bin/sh
# Guard benchmark: lines per second of `relayguard watch --replay` against
# `fail2ban-regex ... postfix[mode=auth]` on the same generated 1,000,000-line
# Postfix log, in the same run, and a check that both find the same
# offending addresses. Usage: bench/guard/run.sh [LINES]
set -eu
cd "$(dirname "$0")/../.."
LINES=${1:-1000000}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
go build -o "$W/relayguard" ./cmd/relayguard
go run ./bench/guard/gen -lines "$LINES" -o "$W/mail.log" -offenders "$W/offenders.txt"
echo "log: $(wc -l < "$W/mail.log") lines, $(du -h "$W/mail.log" | cut -f1); attacking addresses: $(wc -l < "$W/offenders.txt")"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# Same conditions for both: the log written out and in the page cache.
sync
cat "$W/mail.log" > /dev/null

now() { date +%s.%N; }

t0=$(now)
"$W/relayguard" --config bench/guard/bench.toml --data-dir "$W/data" watch --replay --json "$W/mail.log" > "$W/rg.json"
t1=$(now)
rg=$(echo "$t1 - $t0" | bc)

t0=$(now)
fail2ban-regex -o ip "$W/mail.log" 'postfix[mode=auth]' > "$W/f2b.txt"
t1=$(now)
f2b=$(echo "$t1 - $t0" | bc)

# relayguard bans /32 and /128 prefixes; fail2ban prints addresses.
sed -n 's/.*"prefix":"\([^"]*\)\/[0-9]*".*/\1/p' "$W/rg.json" | sort -u > "$W/rg.ips"
grep -v '^$' "$W/f2b.txt" | sort -u > "$W/f2b.ips"
sort -u "$W/offenders.txt" > "$W/truth.ips"

printf 'relayguard watch --replay: %6.2f s  %9.0f lines/s  %d bans, %d addresses\n' "$rg" "$(echo "$LINES / $rg" | bc -l)" "$(wc -l < "$W/rg.json")" "$(wc -l < "$W/rg.ips")"
printf 'fail2ban-regex auth:       %6.2f s  %9.0f lines/s  %d matches, %d addresses\n' "$f2b" "$(echo "$LINES / $f2b" | bc -l)" "$(wc -l < "$W/f2b.txt")" "$(wc -l < "$W/f2b.ips")"
printf 'speed-up: %.1fx\n' "$(echo "$f2b / $rg" | bc -l)"
if cmp -s "$W/rg.ips" "$W/f2b.ips" && cmp -s "$W/rg.ips" "$W/truth.ips"; then
	echo "offending addresses: identical ($(wc -l < "$W/rg.ips")), and equal to the generator's attackers"
else
	echo "offending addresses DIFFER:"
	diff "$W/rg.ips" "$W/f2b.ips" | head -20
	exit 1
fi
