#!/bin/bash
# Policy delegation benchmark: relayguard policy vs postfwd (Debian package
# postfwd, postfwd2) on an equivalent rule set, same load, same run:
# permit_mynetworks, reject_unauth_destination and ZONES DNS lists (default
# 10, served by the benchmark's own DNS server, warm in both caches).
#
#  1. saturated throughput: closed loop, CONNS connections each sending one
#     request at a time as fast as the server answers, for both servers;
#  2. latency at a fixed offered rate (open loop, relayguard only: postfwd
#     saturates far below): RATES requests per second on POOL connections,
#     latency from each request's scheduled send time (see
#     bench/policy/main.go), so queueing behind a slow answer is counted;
#     with the load generator's own lateness and CPU per request, and a
#     "# WARNING" line when it could not keep its schedule; the server on
#     CPU 0 and the generator on CPU 1 (PIN=1), then VARIANTS at VRATE:
#     unpinned, unpinned with GOMAXPROCS=1, requests spread over the
#     connections as Postfix's smtpd processes send them.
#
# Needs root (the lists' DNS server binds 127.0.0.153:53 because postfwd's
# Net::DNS only talks to port 53, and it reads only /etc/resolv.conf).
# Usage: bench/policy/run.sh [duration] [conns]
#        ZONES=10 RATES="5000 10000 20000" POOL=200 WARM=20s PRIO=
#        PIN=1 VARIANTS="unpinned procs1 spread" VRATE=20000 (see the end)
# PRIO="chrt -r -p 10" (or "renice -n -10 -p") is applied to this script
# after the builds, so every process of the benchmark (DNS server, both
# policy servers, the load generator) inherits it: on a machine shared with
# other jobs the open-loop latency otherwise measures the scheduler's queue
# of everybody's runnable threads, not the servers' service time.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-20s}
CONNS=${2:-64}
ZONES=${ZONES:-10}
RATES=${RATES:-5000 10000 20000}
POOL=${POOL:-200}
PRIO=${PRIO:-}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$TMP/postfwd.pid" ] && postfwd --pidfile "$TMP/postfwd.pid" --kill >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RGPORT=$(free_port)
PFPORT=$(free_port)

go build -o "$TMP/relayguard" ./cmd/relayguard
go build -o "$TMP/policybench" ./bench/policy
[ -z "$PRIO" ] || $PRIO $$ >/dev/null # inherited by every process started below
# With a real-time PRIO the open-loop generator runs one level above the
# servers: it stands for Postfix's smtpd processes, which do not wait for
# the policy server's threads to get off the CPU before they send, so its
# schedule is not delayed by the server it measures (its lateness is
# reported either way).
GEN=
case $PRIO in
chrt\ -r*|chrt\ -f*) GEN="chrt ${PRIO:5:2} $(( $(grep -o '[0-9]\+' <<<"$PRIO" | tail -1) + 1 ))" ;;
esac

# The same rules for both: every zone rejects what it lists (127.0.0.2).
zones=""; rbl=""
for z in $(seq 0 $((ZONES - 1))); do
  zones="$zones${zones:+, }\"bl$z.test=127.0.0.2\""
  rbl="$rbl${rbl:+, }bl$z.test/127.0.0.2/3600"
done
cat > "$TMP/relayguard.toml" <<TOML
local_domains = ["example.test"]
mynetworks = ["10.0.0.0/8"]
[log]
level = "warn"
[policy]
recipient_restrictions = ["permit_mynetworks", "reject_unauth_destination", "dnsbl_score"]
[delivery.rate_limits]
# counted, as in production, but never reached by the benchmark's
# mynetworks clients (5 % of the requests, all from sender.test)
ip_messages_per_hour = 100000000
sender_domain_messages_per_hour = 100000000
[dnsbl]
zones = [$zones]
reject_threshold = 1
resolvers = ["127.0.0.153:53"]
health_interval = "0s"
TOML
cat > "$TMP/postfwd.cf" <<CF
id=MYNETWORKS; client_address=10.0.0.0/8; action=OK
id=RELAY; recipient_domain=!!^example\.test\$; action=REJECT Relay access denied
id=RBL; rbl=$rbl; action=REJECT Service unavailable - client listed
CF

"$TMP/policybench" -dns 127.0.0.153:53 -zones "$ZONES" & PIDS+=($!)
# Every relayguard server serves its metrics (MET[pid]=address): the rows
# count its garbage collections from go_gc_duration_seconds_count.
declare -A MET
RGMET=127.0.0.1:$(free_port)
"$TMP/relayguard" --config "$TMP/relayguard.toml" --data-dir "$TMP/data" --create-data-dir policy --listen 127.0.0.1:$RGPORT --metrics "$RGMET" & PIDS+=($!)
RGPID=$!
MET[$RGPID]=$RGMET
# postfwd runs in taint mode, where Net::DNS takes only /etc/resolv.conf:
# give it one naming the bench DNS server, in a private mount namespace.
echo "nameserver 127.0.0.153" > "$TMP/resolv.conf"
chmod 755 "$TMP"
unshare --mount --propagation private sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$TMP/resolv.conf" \
  postfwd --file "$TMP/postfwd.cf" --interface 127.0.0.1 --port $PFPORT \
  --pidfile "$TMP/postfwd.pid" --user nobody --group nogroup --perfmon \
  --min_servers "$CONNS" --max_servers "$((CONNS + 8))" --min_spare_servers 4 --max_spare_servers "$CONNS"
for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/$PFPORT) 2>/dev/null && break; sleep 1; done
for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/$RGPORT) 2>/dev/null && break; sleep 1; done; sleep 5

# Warm-up: long enough for every postfwd child to cache all 256 clients' answers.
WARM=${WARM:-20s}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $ZONES DNS lists, warm caches, priority: ${PRIO:-default}"
echo "# saturated: closed loop, $CONNS connections, $DUR per server after $WARM warm-up"
"$TMP/policybench" -name relayguard -addr 127.0.0.1:$RGPORT -conns "$CONNS" -duration "$DUR" -warmup "$WARM" -pids "$RGPID" | tee "$TMP/rg.sat"
"$TMP/policybench" -name postfwd -addr 127.0.0.1:$PFPORT -conns "$CONNS" -duration "$DUR" -warmup "$WARM" -pids "$(pgrep -d, -s "$(cat "$TMP/postfwd.pid")")" | tee "$TMP/pf.sat"
rate() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$2"; }
awk -v r="$(rate rate "$TMP/rg.sat")" -v p="$(rate rate "$TMP/pf.sat")" -v rc="$(rate cpu_per_decision "$TMP/rg.sat")" -v pc="$(rate cpu_per_decision "$TMP/pf.sat")" \
  -v z="$ZONES" -v c="$CONNS" -v prio="${PRIO:-default priority}" \
  'BEGIN { printf "saturated throughput: relayguard %d/s, postfwd %d/s: %.1fx; CPU per decision: relayguard %.1f µs, postfwd %.1f µs: %.1fx\n", r, p, r / p, rc, pc, pc / rc
    printf "| policy, saturated | %d DNS lists warm, %d connections, closed loop (%s) | %d decisions/s, %.1f µs CPU each | postfwd: %d/s, %.0f µs CPU each | %.1fx | %.1fx | |\n", z, c, prio, r, rc, p, pc, r / p, pc / rc }'
# cpustat: the machine's CPU time so far as "busy idle steal" (jiffies,
# /proc/stat): what else ran during a row, and what the hypervisor took.
cpustat() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat; }
# openrow LABEL ADDR PID GENPREFIX RATE [policybench flags]: one open-loop
# run and its row: latency from the due time, the server's CPU per
# decision, its garbage collections and context switches per request
# during the run, how well the load generator kept its schedule (its own
# lateness and CPU: it shares the cores with the server), and the
# machine's idle and steal time during the run.
# gcs PID: the server's garbage collections so far (its metrics); ctxsw
# PID: its threads' context switches so far (/proc).
gcs() { { curl -s "http://${MET[$1]:-}/metrics" || true; } | awk '/^go_gc_duration_seconds_count/ { print $2 }'; }
ctxsw() { { cat /proc/"$1"/task/*/status 2>/dev/null || true; } | awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'; }
openrow() {
  local label=$1 addr=$2 pid=$3 gen=$4 r=$5; shift 5
  local c0 c1 g0 g1 x0 x1
  c0=$(cpustat)
  # the counters are read during the generator's 3 s warm-up and just
  # after its measured run: a little of the warm-up is in them
  ( sleep 3; echo "$(gcs "$pid") $(ctxsw "$pid")" > "$TMP/counters0" ) &
  $gen "$TMP/policybench" -name relayguard -addr "$addr" -rate "$r" -conns "$POOL" -duration "$DUR" -warmup 3s -pids "$pid" "$@" | tee "$TMP/open"
  g1=$(gcs "$pid") x1=$(ctxsw "$pid")
  wait $!
  read -r g0 x0 < "$TMP/counters0"
  c1=$(cpustat)
  f() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$TMP/open"; }
  local warn machine
  warn=$(grep -q '^# WARNING' "$TMP/open" && echo "; generator behind schedule (see output)" || true)
  machine=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x); split(b, y); t = (y[1] - x[1]) + (y[2] - x[2]) + (y[3] - x[3])
    if (t > 0) printf "machine idle %.0f %%, steal %.1f %%", 100 * (y[2] - x[2]) / t, 100 * (y[3] - x[3]) / t }')
  echo "| policy, open loop$label | $ZONES DNS lists warm, $r requests/s offered on $POOL connections (${PRIO:-default priority}) | $(f achieved), p50 $(f p50), p99 $(f p99), p99.9 $(f p99.9), $(f over_1ms) over 1 ms; server $(f cpu_per_decision) CPU each, $((g1 - g0)) garbage collections, $(awk -v a="$x0" -v b="$x1" -v n="$(f achieved | tr -dc 0-9)" -v d="${DUR%s}" 'BEGIN { if (n > 0 && d > 0) printf "%.2f", (b - a) / (n * d) }') context switches per request | load generator: handed out late by p50 $(f late_p50), p99 $(f late_p99), p99.9 $(f late_p99.9); $(f loader_cpu_per_request) CPU per request$warn; write to answer p99 $(f resp_p99), p99.9 $(f resp_p99.9); $machine | | | ${CHECK:-} |"
}
# rgstart NAME ADDR [command prefix...]: another relayguard policy on the
# same configuration (its own data directory) listening on ADDR (IP:port
# or unix:/path), warmed like the first; sets VPID.
rgstart() {
  local name=$1 addr=$2 met; shift 2
  met=127.0.0.1:$(free_port)
  "$@" "$TMP/relayguard" --config "$TMP/relayguard.toml" --data-dir "$TMP/data-$name" --create-data-dir policy --listen "$addr" --metrics "$met" & PIDS+=($!)
  VPID=$!
  MET[$VPID]=$met
  for i in $(seq 60); do
    case $addr in
    unix:*) [ -S "${addr#unix:}" ] && break ;;
    *) (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break ;;
    esac
    sleep 1
  done
  "$TMP/policybench" -addr "$addr" -conns "$CONNS" -duration 1s -warmup 2s > /dev/null # fills its DNS cache
}
# The benchmark's configuration for the open loop (PIN=1, the default):
# the server's threads on CPU 0 and the load generator on CPU 1
# (taskset), so that neither takes the other's core: the generator
# stands for Postfix's smtpd processes, which run beside the policy
# service, not in its place. Pinned, the server has one P (Go sizes
# GOMAXPROCS by its CPU mask). The variants below report the unpinned
# figures in the same run.
PIN=${PIN-1}
[ "$(nproc)" -ge 2 ] || PIN=0
if [ "$PIN" = 1 ]; then
  OADDR=127.0.0.1:$(free_port)
  rgstart pinned "$OADDR" taskset -c 0
  OPID=$VPID OGEN="$GEN taskset -c 1" OCONF=", pinned"
else
  OADDR=127.0.0.1:$RGPORT OPID=$RGPID OGEN=$GEN OCONF=""
fi
echo "# open loop: offered rate, $POOL connections, latency from the scheduled send time, load generator ${GEN:-at the same priority}${OCONF:+, server on CPU 0 and load generator on CPU 1} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $RATES; do
  CHECK="goal p99 < 1 ms at 20,000/s"
  [ "$r" = 20000 ] && CHECK="$CHECK: this row"
  openrow "$OCONF" "$OADDR" "$OPID" "$OGEN" "$r"
done
CHECK="for comparison with the row at the same rate above"

# Variants at VRATE (VARIANTS: a list of these names; empty: none):
#   unpinned  the saturated run's server (GOMAXPROCS = 2 on this machine)
#             and the generator, wherever the kernel puts them
#   procs1    unpinned, the server with GOMAXPROCS=1: one P, so an idle
#             thread waits in epoll_wait itself and a ready connection
#             runs without waking another thread (less CPU per request,
#             but no second core for a burst)
#   spread    as the rows above, request i on connection i mod POOL, as
#             each Postfix smtpd process asks on its own connection
#             (the rows above: any free connection, the one freed last)
#   unix      as the rows above over a unix socket (Postfix:
#             check_policy_service unix:...) instead of loopback TCP
#             (not in the default list: 2-3 µs of CPU less per request,
#             latency the same within the noise at load 23-26)
VARIANTS=${VARIANTS-unpinned procs1 spread}
VRATE=${VRATE:-20000}
for v in $VARIANTS; do
  case $v in
  unpinned) openrow ", unpinned" "127.0.0.1:$RGPORT" "$RGPID" "$GEN" "$VRATE" ;;
  procs1)
    addr=127.0.0.1:$(free_port)
    rgstart procs1 "$addr" env GOMAXPROCS=1
    openrow ", unpinned, GOMAXPROCS=1" "$addr" "$VPID" "$GEN" "$VRATE"
    kill "$VPID"; wait "$VPID" 2>/dev/null || true
    ;;
  spread) openrow "$OCONF, spread" "$OADDR" "$OPID" "$OGEN" "$VRATE" -spread ;;
  unix)
    if [ "$PIN" = 1 ]; then rgstart unix "unix:$TMP/policy.sock" taskset -c 0; else rgstart unix "unix:$TMP/policy.sock"; fi
    openrow "$OCONF, unix socket" "unix:$TMP/policy.sock" "$VPID" "$OGEN" "$VRATE"
    kill "$VPID"; wait "$VPID" 2>/dev/null || true
    ;;
  *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
