#!/bin/sh
# Benchmarks of relayguard egress, with the usual tools on the same input:
#  1. `relayguard egress report` vs an awk one-liner counting packet log
#     lines by UID (what operators do by hand today) on a synthetic kern.log.
#  2. attribution of one connection: relayguard's sock_diag + /proc/*/fd
#     scan (Go benchmark) vs `ss -tnpH` for the same connection.
# Usage: bench/egress/run.sh [LINES]   (run from the repository root)
set -eu
LINES=${1:-200000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/relayguard" ./cmd/relayguard

awk -v n="$LINES" 'BEGIN {
  srand(1);
  for (i = 0; i < n; i++) {
    uid = (i % 7 == 0) ? 33 : 2000 + (i % 5);
    d = sprintf("203.0.113.%d", i % 50);
    sp = 30000 + int(i / 3);   # every attempt is logged three times (SYN retransmissions)
    printf "Nov 23 18:%02d:%02d mx kernel: [%d.%06d] IN= OUT=eth0 SRC=192.0.2.7 DST=%s LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=%d DF PROTO=TCP SPT=%d DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=%d GID=%d\n", (i/60)%60, i%60, i, i%1000000, d, i%65536, sp, uid, uid
  }
}' > "$tmp/kern.log"
echo "input: $LINES lines, $(du -h "$tmp/kern.log" | cut -f1)"

t() { # t LABEL CMD... : wall time of the best of 3 runs
  label=$1; shift
  best=""
  for _ in 1 2 3; do
    s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc)
    if [ -z "$best" ] || [ "$(echo "$d < $best" | bc)" = 1 ]; then best=$d; fi
  done
  printf '%-58s %8.3f s\n' "$label" "$best"
}
t "relayguard egress report (dedupe, per uid/user/destination)" "$tmp/relayguard" --data-dir "$tmp/d" egress report "$tmp/kern.log"
t "awk: count lines by UID (no dedupe, no user names)" awk 'match($0, /UID=[0-9]+/) { c[substr($0, RSTART+4, RLENGTH-4)]++ } END { for (u in c) print u, c[u] }' "$tmp/kern.log"
t "grep -o UID= | sort | uniq -c" sh -c "grep -o 'UID=[0-9]*' '$tmp/kern.log' | sort | uniq -c"

echo
echo "attribution of one connection (Go benchmark, sock_diag and /proc/net/tcp):"
go test -run XXX -bench 'Attribute' -benchtime 200x ./internal/egress/ | grep '^Benchmark'
echo "ss -tnpH (same socket table + /proc/*/fd scan), 200 runs:"
python3 - <<'PY'
import socket, subprocess, time
ln = socket.socket(); ln.bind(("127.0.0.1", 0)); ln.listen()
c = socket.create_connection(ln.getsockname())
lp = c.getsockname()[1]
t0 = time.perf_counter()
for _ in range(200):
    subprocess.run(["ss", "-tnpH", "src", "127.0.0.1:%d" % lp], check=True, capture_output=True)
dt = (time.perf_counter() - t0) / 200
print("ss -tnpH src ADDR                 %12d ns/op (includes fork+exec)" % (dt * 1e9))
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), cpus: $(nproc)"
