#!/bin/sh
# Guard memory benchmark: peak RSS of `relayguard watch --replay` (default
# configuration: subnet rules on) over a log where N distinct IPv4 addresses
# spread over the address space each fail SASL twice within 30 minutes
# (inside findtime and the subnet window: nothing may expire), with 1,000
# attackers failing six times within five minutes and five /24s of five
# failing addresses among them (bench/guard/gen -distinct). Run once with
# the default guard.max_tracked and once with MAX (default N: room for
# every address and the attackers). Checks that the bans are the generator's attackers and
# /24s (plus any /24 the random addresses filled by chance).
# Usage: bench/guard/memory.sh [N] [MAX]
set -eu
cd "$(dirname "$0")/../.."
N=${1:-1000000}
MAX=${2:-$((N + N / 10))}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
go build -o "$W/relayguard" ./cmd/relayguard
go build -o "$W/gen" ./bench/guard/gen
"$W/gen" -distinct "$N" -attackers 1000 -o "$W/dense.log" -offenders "$W/truth.txt"
sort -u "$W/truth.txt" > "$W/truth.ips"
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $N distinct addresses, $(wc -l < "$W/dense.log") lines"
printf '[guard]\nmax_tracked = %d\n' "$MAX" > "$W/max.toml"
for conf in default "$W/max.toml"; do
	rm -rf "$W/data"
	if [ "$conf" = default ]; then set --; else set -- --config "$conf"; fi
	/usr/bin/time -f '%e %U %S %M' -o "$W/time" "$W/relayguard" "$@" --data-dir "$W/data" --create-data-dir watch --replay --json "$W/dense.log" > "$W/bans.json" 2> "$W/log"
	read -r w u s m < "$W/time"
	sed -n 's/.*"prefix":"\([^"]*\)".*/\1/p' "$W/bans.json" | sed 's|/32$||' | sort -u > "$W/bans"
	missing=$(comm -23 "$W/truth.ips" "$W/bans" | wc -l)
	extra=$(comm -13 "$W/truth.ips" "$W/bans" | tr '\n' ' ')
	done=$(grep -o 'tracked=[0-9]* dropped=[0-9]* pairing_dropped=[0-9]*' "$W/log" || true)
	max=$([ "$conf" = default ] && echo "default" || echo "$MAX")
	# (the columns of bench/run-all.sh's table: no comparison tool, no ratios)
	printf '| guard memory | %d distinct addresses failing twice in 30 min, max_tracked %s | %d MB peak RSS, %.2f s CPU | — | | | %s; %d of %d attackers and /24s banned%s |\n' \
		"$N" "$max" $((m / 1024)) "$(echo "$u + $s" | bc)" "$done" $(($(wc -l < "$W/truth.ips") - missing)) "$(wc -l < "$W/truth.ips")" "${extra:+; also banned: $extra}"
done
