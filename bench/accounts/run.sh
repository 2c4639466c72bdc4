#!/bin/sh
# Login cost per SASL mechanism (server side, SQLite lookup included), and
# the argon2 reference implementation (Debian package argon2) hashing with
# the same parameters, in the same run, for comparison.
# Usage: bench/accounts/run.sh   (from the repository root)
set -eu
N=${N:-20}
echo "== go test -bench BenchmarkLogin ./internal/sasl"
go test -run '^$' -bench BenchmarkLogin -benchtime "${N}x" -count 3 ./internal/sasl | grep -E '^Benchmark|^cpu'
echo "== argon2 reference CLI, argon2id m=19456 KiB t=2 p=1, $N hashes"
start=$(date +%s%N)
i=0
while [ $i -lt "$N" ]; do
	printf 'correct horse battery staple' | argon2 relayguardsalt -id -t 2 -k 19456 -p 1 -e >/dev/null
	i=$((i + 1))
done
end=$(date +%s%N)
echo "argon2-cli: $(( (end - start) / N / 1000 )) us/hash (process start included)"
