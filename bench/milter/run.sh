#!/usr/bin/env bash
# Postfix's throughput with and without relayguard milter, same machine,
# same run: authenticated submissions (the milter's full path: {auth_authen},
# envelope and header From: binding, send-limit counters and the accounts'
# observations in the state store, every message) from bench/milter's
# driver, and unauthenticated MX mail from Postfix's smtp-source (the
# milter accepts at MAIL FROM). Postfix 3.7 private instance with Dovecot
# SASL, messages handed to the discard transport.
#
#   RUNS=5 CONNS=20 MSGS=300 bench/milter/run.sh      (root; postfix, dovecot-core)
#
# Each run has one round of each kind with and without the milter, the
# order alternating between runs; every round prints msg/s and the CPU
# per message of Postfix+Dovecot and of the milter, and the last lines
# ("COST ...") give the medians and the cost in throughput.
#   STORE=redis://127.0.0.1:6379/0 bench/milter/run.sh  (counters in Redis)
#   PERF=/tmp/dir bench/milter/run.sh  (perf record of the milter in its rounds)
#   PFPERF=/tmp/dir bench/milter/run.sh
#                                      (perf record -a of Postfix's CPU in split
#                                       mode, of the machine otherwise, in every
#                                       authenticated round: read it with
#                                       perf report -i FILE --comms smtpd,cleanup
#                                       --sort comm,dso,sym; -g: the kernel
#                                       call chains hold, Postfix has no frame
#                                       pointers)
#   LIMITS=false bench/milter/run.sh   (smtp_send_limits = false: the policy
#                                       service counts the limits)
#   FLOOR=none bench/milter/run.sh     (no no-op milters: see below)
#   LOGLEVEL=info bench/milter/run.sh  (the milter logs every accepted message,
#                                       as with the default [log] level)
#   BASE=<git rev> bench/milter/run.sh (also relayguard's milter built at that
#                                       revision, "base", with its own data
#                                       directory, alternated in the same
#                                       rounds: old and new code in the same
#                                       minutes)
#   MILTER_ENV="GOGC=100" bench/milter/run.sh
#                                      (environment of relayguard's milter, the
#                                       current one only: with BASE, a setting
#                                       against the same code without it)
#   TRACE=/tmp/dir bench/milter/run.sh (perf stat of every milter in its
#                                       authenticated rounds: system calls
#                                       by kind, context switches)
#   SPOOL=tmpfs bench/milter/run.sh    (everything of the run, Postfix's queue
#                                       and the milters' databases included,
#                                       on a tmpfs mounted for the run: see
#                                       "The spool" below)
#   CPUS=split bench/milter/run.sh     (Postfix, Dovecot and the load drivers
#                                       on one CPU, every milter on another:
#                                       see "CPU modes" below)
#
# CPU modes. CPUS=shared (the default): every process may run on every
# CPU; on a machine where Postfix is CPU-bound, any CPU a milter uses is
# taken from Postfix, so the cost is the milter's CPU plus what it costs
# Postfix's own processes. CPUS=split: Postfix's master (and so every
# child it forks: smtpd, cleanup, qmgr, ...), Dovecot (and its children)
# and the load drivers (miltersubmit, smtp-source) are confined with
# sched_setaffinity (taskset, inherited across fork and exec) to
# PF_CPU (default 0), and every milter (relayguard's, BASE's, noop-go,
# noop-c) to MILTER_CPU (default 1). Nothing a milter computes is then
# taken from Postfix: what Postfix loses is what the milter conversation
# costs its own processes (the events written, the replies read, the
# waiting) — the cost a server with a spare core pays. The drivers stay on
# Postfix's CPU in every round (DRIVER_CPU=MILTER_CPU puts them with the
# milters instead; docs/benchmarks/containment.md, round 7, says why
# not). Each run prints, once, the CPUs every process involved may use
# (Cpus_allowed_list of Postfix's master and children, Dovecot's, every
# milter's threads and the drivers), and every round the busy share of
# each CPU and the driver's CPU per message. The machine's other
# processes are not confined: run it quiet.
#
# The spool. SPOOL=disk (the default) keeps the run's files, Postfix's
# queue among them, under /tmp. On a file system where creating a file
# costs more the more files were deleted in the last minutes (ext4 without
# a journal, as on the project's VM, skips the inodes freed recently one by
# one: fs/ext4/ialloc.c, recently_deleted), each round's
# Postfix CPU then depends on how much mail the rounds before it queued.
# SPOOL=tmpfs mounts a tmpfs on the run's directory (removed at the end):
# no disk, no fsync wait, the same cost for a queue file in every round.
#
# The floor: every run also has rounds with a no-op milter that negotiates
# exactly what relayguard's milter negotiates (actions, protocol options,
# macros: internal/milter.Negotiation) and sees the same events but decides
# nothing — on go-milter (bench/milter/noop, "noop-go") and on Sendmail's
# libmilter (bench/milter/c/noop.c, "noop-c", when cc and libmilter-dev are
# there). What Postfix loses with them is what any milter so negotiated
# costs it; the COST lines give it beside relayguard's.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
CONNS=${CONNS:-20}
MSGS=${MSGS:-300}
USERS=${USERS:-50}
RCPTS=${RCPTS:-2}
CPUS=${CPUS:-shared}
case $CPUS in
shared) PF_CPU='' MILTER_CPU='' DRIVER_CPU='' ;;
split)
	[ "$(nproc)" -ge 2 ] || { echo "CPUS=split needs 2 CPUs, this machine has $(nproc)" >&2; exit 1; }
	PF_CPU=${PF_CPU:-0} MILTER_CPU=${MILTER_CPU:-1}
	DRIVER_CPU=${DRIVER_CPU:-$PF_CPU}
	[ "$PF_CPU" != "$MILTER_CPU" ] || { echo "CPUS=split: PF_CPU and MILTER_CPU are both $PF_CPU" >&2; exit 1; } ;;
*) echo "CPUS=$CPUS: want shared or split" >&2; exit 1 ;;
esac
# Command prefixes confining a process to its CPU (empty in shared mode);
# taskset execs the command, so $! is the confined process's pid.
pin() { [ -z "$1" ] || echo "taskset -c $1"; }
read -ra PF_PIN <<<"$(pin "$PF_CPU")"
read -ra MILTER_PIN <<<"$(pin "$MILTER_CPU")"
read -ra DRIVER_PIN <<<"$(pin "$DRIVER_CPU")"
MODE=shared
[ "$CPUS" = split ] && MODE="split: postfix+dovecot cpu $PF_CPU, milters cpu $MILTER_CPU, drivers cpu $DRIVER_CPU"
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
OUT=$(mktemp -d /tmp/rgmilter.XXXX)
SPOOL=${SPOOL:-disk}
case $SPOOL in
disk) ;;
tmpfs) mount -t tmpfs -o size=2g tmpfs "$OUT" ;;
*) echo "SPOOL=$SPOOL: want disk or tmpfs" >&2; exit 1 ;;
esac
chmod 755 "$OUT"
PIDS=()
ROUNDPERF=() # the perf processes of the round running (PERF, PFPERF, TRACE)
cleanup() {
	# perf record -a follows no process: stopped first, or wait waits for it.
	for p in "${ROUNDPERF[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	postfix -c "$OUT/pf" stop >/dev/null 2>&1 || true
	doveadm -c "$OUT/dovecot.conf" stop >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	[ "$SPOOL" != tmpfs ] || umount -l "$OUT"
	rm -rf "$OUT"
}
trap cleanup EXIT
go build -o "$OUT/relayguard" ./cmd/relayguard
go build -o "$OUT/miltersubmit" ./bench/milter
FLOOR=${FLOOR:-go c}
MILTERS=(milter)
if [ -n "${BASE:-}" ]; then
	mkdir -p "$OUT/base-src"
	git archive "$BASE" | tar -x -C "$OUT/base-src"
	(cd "$OUT/base-src" && go build -o "$OUT/relayguard-base" ./cmd/relayguard)
	MILTERS+=(base)
fi
case " $FLOOR " in *" go "*)
	go build -o "$OUT/noopmilter" ./bench/milter/noop
	MILTERS+=(noop-go) ;;
esac
case " $FLOOR " in *" c "*)
	if cc -O2 -o "$OUT/noopc" bench/milter/c/noop.c -lmilter -lpthread 2>"$OUT/cc.log"; then
		MILTERS+=(noop-c)
	else
		echo "# no C no-op milter (needs cc and libmilter-dev): $(head -1 "$OUT/cc.log")"
	fi ;;
esac

# Dovecot, authentication only: users u0..u(USERS-1), password "pw".
mkdir -p "$OUT/dv/run" "$OUT/dv/state"
for i in $(seq 0 $((USERS - 1))); do echo "u$i:{PLAIN}pw"; done >"$OUT/passwd"
cat >"$OUT/dovecot.conf" <<CF
base_dir = $OUT/dv/run
state_dir = $OUT/dv/state
log_path = $OUT/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = 10M
default_login_user = dovenull
default_internal_user = dovecot
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $OUT/passwd
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$OUT/dv/home/%u
}
service auth {
  unix_listener $OUT/auth {
    mode = 0666
  }
}
CF
"${PF_PIN[@]}" dovecot -c "$OUT/dovecot.conf"

# relayguard milter: limits far above the load (the counting is measured,
# not the refusals), the accounts' detection on (volume_minimum raised so
# that 50 new accounts sending hundreds of messages are not suspended).
cat >"$OUT/rg.toml" <<TOML
hostname = "bench.test"
local_domains = ["example.test"]
[log]
level = "${LOGLEVEL:-warn}"
[store]
url = "${STORE:-}"
[milter]
listen = "unix:$OUT/milter.sock"
smtp_send_limits = ${LIMITS:-true}
queue_directories = ["$OUT/pfq"]
[delivery.rate_limits]
user_messages_per_hour = 100000000
user_recipients_per_day = 100000000
user_new_recipients_per_day = 100000000
[accounts]
volume_minimum = 100000000
TOML
mkdir -p "$OUT/rgdata"
"${MILTER_PIN[@]}" env ${MILTER_GOMAXPROCS:+GOMAXPROCS=$MILTER_GOMAXPROCS} ${MILTER_ENV:-} "$OUT/relayguard" --config "$OUT/rg.toml" --data-dir "$OUT/rgdata" milter 2>"$OUT/rg.log" &
PIDS+=($!)
declare -A MPID=([milter]=$!)
declare -A MSOCK=([milter]="$OUT/milter.sock")
for m in "${MILTERS[@]}"; do
	case $m in
	noop-go)
		"${MILTER_PIN[@]}" env ${MILTER_GOMAXPROCS:+GOMAXPROCS=$MILTER_GOMAXPROCS} "$OUT/noopmilter" -listen "unix:$OUT/noop-go.sock" -limits="${LIMITS:-true}" 2>"$OUT/noop-go.log" &
		;;
	base)
		sed "s|$OUT/milter.sock|$OUT/base.sock|" "$OUT/rg.toml" >"$OUT/rg-base.toml"
		mkdir -p "$OUT/rgdata-base"
		"${MILTER_PIN[@]}" env ${MILTER_GOMAXPROCS:+GOMAXPROCS=$MILTER_GOMAXPROCS} "$OUT/relayguard-base" --config "$OUT/rg-base.toml" --data-dir "$OUT/rgdata-base" milter 2>"$OUT/rg-base.log" &
		;;
	noop-c)
		# The negotiation relayguard's milter makes, as noopmilter prints it.
		mapfile -t NEG < <("$OUT/noopmilter" -print -limits="${LIMITS:-true}" 2>/dev/null || go run ./bench/milter/noop -print -limits="${LIMITS:-true}")
		(umask 0 && exec "${MILTER_PIN[@]}" "$OUT/noopc" "unix:$OUT/noop-c.sock" ${NEG[0]} "${NEG[@]:1}") 2>"$OUT/noop-c.log" &
		;;
	*) continue ;;
	esac
	PIDS+=($!)
	MPID[$m]=$!
	MSOCK[$m]="$OUT/$m.sock"
done

# A private Postfix instance.
mkdir -p "$OUT/pf" "$OUT/pfq/data"
chown postfix "$OUT/pfq/data"
cp /usr/share/postfix/master.cf.dist "$OUT/pf/master.cf"
sed -i "s/^smtp      inet.*/127.0.0.1:$PORT inet  n       -       n       -       -       smtpd/" "$OUT/pf/master.cf"
cat >"$OUT/pf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $OUT/pfq
data_directory = $OUT/pfq/data
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.test
mydestination =
relay_domains = example.test
mynetworks =
default_transport = discard
relay_transport = discard
local_recipient_maps =
alias_maps =
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $OUT/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
milter_default_action = tempfail
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer} {client_addr}
smtpd_milters =
non_smtpd_milters =
maillog_file = $OUT/maillog
maillog_file_prefixes = $OUT
default_process_limit = 200
CF
"${PF_PIN[@]}" postfix -c "$OUT/pf" start
for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.5; done
for m in "${MILTERS[@]}"; do
	for i in $(seq 60); do [ -S "${MSOCK[$m]}" ] && break; sleep 0.5; done
done

milter() {
	postconf -c "$OUT/pf" -e "smtpd_milters = $1"
	postfix -c "$OUT/pf" reload >/dev/null 2>&1
	sleep 2
}

# CPU time (clock ticks) of Postfix's processes and Dovecot's: each master
# with its reaped children (cutime, cstime) plus its live children. The
# difference over a round is the CPU those servers spent on it, whichever
# child did the work and whether it exited meanwhile.
tree_ticks() { # master pid
	local m=$1 t=0 c
	t=$(awk '{print $14+$15+$16+$17}' "/proc/$m/stat")
	for c in $(pgrep -P "$m"); do
		t=$((t + $(awk '{print $14+$15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Context switches of a process, all its threads.
proc_cs() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
PFMASTER=$(head -1 "$OUT/pfq/pid/master.pid" | tr -d ' ')
DVMASTER=$(cat "$OUT/dv/run/master.pid")
RGPID=${PIDS[0]}
HZ=$(getconf CLK_TCK)
snap() { # the milter process's pid, or 0 for none
	local m=0 cs=0
	[ "$1" = 0 ] || { m=$(proc_ticks "$1"); cs=$(proc_cs "$1"); }
	echo "$(($(tree_ticks "$PFMASTER") + $(tree_ticks "$DVMASTER"))) $m $cs"
}

# CPU time of this script's reaped children (the load driver of a round,
# with the few awk/sed it runs: a bound on the driver's CPU).
self_children_ticks() { awk '{print $16+$17}' /proc/$$/stat; }
# Busy and total ticks of every CPU, "cpuN:busy:total ...", and the busy
# share of each between two such readings: all processes of the machine,
# not only the benchmark's.
cpu_ticks() { awk '/^cpu[0-9]/ {t = 0; for (i = 2; i <= NF; i++) t += $i; printf "%s:%d:%d ", $1, t - $5 - $6, t}' /proc/stat; }
busy() {
	local a b out=() i
	read -ra a <<<"$1"
	read -ra b <<<"$2"
	for i in "${!a[@]}"; do
		IFS=: read -r n x0 t0 <<<"${a[$i]}"
		IFS=: read -r _ x1 t1 <<<"${b[$i]}"
		out+=("$n $((100 * (x1 - x0) / (t1 - t0 > 0 ? t1 - t0 : 1)))%")
	done
	local IFS=,
	echo "${out[*]}"
}

# Where every process of the benchmark may run: "name(pid) CPU list" with
# the distinct lists of all its threads. In split mode, any process
# outside its CPU stops the benchmark.
allowed() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^Cpus_allowed_list/ {print $2}' | sort -u | paste -sd/; }
confinement() {
	local line=() bad=0 p want l
	check() { # pid want
		l=$(allowed "$1" || true) # gone meanwhile: empty
		[ -n "$l" ] || { line+=("($1) gone"); return; }
		line+=("$(cat /proc/"$1"/comm 2>/dev/null || true)($1) $l")
		[ "$CPUS" != split ] || [ "$l" = "$2" ] || bad=1
	}
	for p in "$PFMASTER" $(pgrep -P "$PFMASTER") "$DVMASTER" $(pgrep -P "$DVMASTER"); do check "$p" "$PF_CPU"; done
	for m in "${!MPID[@]}"; do check "${MPID[$m]}" "$MILTER_CPU"; done
	# The drivers, each caught while it sends (taskset execs it: the
	# background function's child, or the function's process itself).
	local k
	for k in auth:miltersubmit mx:smtp-source; do
		MSGS=10 "${k%%:*}" warmup >/dev/null &
		p=
		for i in $(seq 100); do
			if [ "$(cat /proc/$!/comm 2>/dev/null)" = "${k#*:}" ]; then p=$!; else p=$(pgrep -n -x "${k#*:}" -P $!); fi && [ -n "$p" ] && break
			sleep 0.02
		done
		if [ -n "$p" ]; then check "$p" "$DRIVER_CPU"; else line+=("${k#*:} (not caught)"); fi
		wait $!
	done
	local IFS=,
	echo "# cpus allowed ($MODE): ${line[*]}"
	if [ "$bad" = 1 ]; then
		echo "CPUS=split: a process is not confined to its CPU (above)" >&2
		exit 1
	fi
}

# One round: label, then the command sending CONNS*MSGS messages and
# printing "rate=N". Prints the rate and the CPU per message (ms) of
# Postfix+Dovecot and of the milter, and appends "kind label rate cpu"
# to $OUT/results.
round() {
	local kind=$1 label=$2 n=$((CONNS * MSGS)) s0 s1 t0 t1 out rate pf rg cs drv pid=0
	shift 2
	local p
	ROUNDPERF=()
	[ "$label" = postfix ] || pid=${MPID[${label#postfix+}]}
	if [ -n "${PERF:-}" ] && [ "$label" = postfix+milter ]; then
		perf record -q -F 2000 -g -p "$RGPID" -o "$PERF/$kind.$(date +%s).data" >/dev/null 2>&1 &
		ROUNDPERF+=($!)
	fi
	if [ -n "${PFPERF:-}" ] && [ "$kind" = auth ]; then
		perf record -q -F 1999 -g -a ${PF_CPU:+-C "$PF_CPU"} -o "$PFPERF/${label#postfix+}.$kind.$(date +%s).data" >/dev/null 2>&1 &
		ROUNDPERF+=($!)
	fi
	if [ -n "${TRACE:-}" ] && [ "$label" != postfix ] && [ "$kind" = auth ]; then
		perf stat -e context-switches,cpu-migrations,raw_syscalls:sys_enter$(printf ',syscalls:sys_enter_%s' read write pwrite64 pread64 fcntl futex nanosleep epoll_pwait sched_yield) \
			-p "$pid" -o "$TRACE/${label#postfix+}.$kind.$(date +%s).txt" >/dev/null 2>&1 &
		ROUNDPERF+=($!)
	fi
	s0=$(snap "$pid")
	local d0 d1 u0 u1
	d0=$(self_children_ticks)
	u0=$(cpu_ticks)
	t0=$(date +%s.%N)
	out=$("$@")
	t1=$(date +%s.%N)
	u1=$(cpu_ticks)
	d1=$(self_children_ticks)
	s1=$(snap "$pid")
	for p in "${ROUNDPERF[@]}"; do kill -INT "$p"; wait "$p" || true; done
	ROUNDPERF=()
	rate=$(echo "$out" | sed -n 's/.*rate=\([0-9]*\).*/\1/p')
	[ -n "$rate" ] || rate=$(echo "$n / ($t1 - $t0)" | bc)
	local a0 a1 b0 b1 c0 c1
	read -r a0 b0 c0 <<<"$s0"
	read -r a1 b1 c1 <<<"$s1"
	pf=$(echo "scale=3; ($a1 - $a0) * 1000 / $HZ / $n" | bc)
	rg=$(echo "scale=3; ($b1 - $b0) * 1000 / $HZ / $n" | bc)
	cs=$(echo "scale=1; ($c1 - $c0) / $n" | bc)
	drv=$(echo "scale=3; ($d1 - $d0) * 1000 / $HZ / $n" | bc)
	printf '%-16s %-6s %6s msg/s  cpu/msg: postfix+dovecot %s ms, milter %s ms (%s context switches), driver %s ms; cpus busy %s  %s\n' "$label" "$kind" "$rate" "$pf" "$rg" "$cs" "$drv" "$(busy "$u0" "$u1")" "$(echo "$out" | grep -o 'failed=[0-9]*' || true)"
	echo "$kind $label $rate $pf $rg $cs $drv" >>"$OUT/results"
}
auth() {
	"${DRIVER_PIN[@]}" "$OUT/miltersubmit" -name "$1" -addr "127.0.0.1:$PORT" -users "$USERS" -conns "$CONNS" -msgs "$MSGS" -rcpts "$RCPTS"
}
mx() { # unauthenticated MX mail with smtp-source, one message per session
	"${DRIVER_PIN[@]}" smtp-source -s "$CONNS" -m $((CONNS * MSGS)) -l 2048 -f sender@remote.test -t rcpt@example.test "127.0.0.1:$PORT"
}
both() { # label: one round of each kind
	round auth "$1" auth "$1"
	round mx "$1" mx
}

echo "# $(date -u +%FT%TZ) cpus: $MODE; spool: $SPOOL; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs x $CONNS sessions x $MSGS messages, $RCPTS recipients, $USERS logins; store=${STORE:-sqlite}; smtp_send_limits=${LIMITS:-true}; milters: ${MILTERS[*]}"
# Warm-up (caches, Dovecot's auth cache, the milter's first connections),
# not counted.
milter "unix:$OUT/milter.sock"
MSGS=20 auth warmup >/dev/null
confinement
: >"$OUT/results"
# Alternate which configuration goes first, so that a drift of the
# machine's load favours neither.
CONFIGS=(postfix "${MILTERS[@]/#/postfix+}")
for r in $(seq "$RUNS"); do
	# Run r starts at configuration r-1 of the list and goes round it.
	for i in $(seq 0 $((${#CONFIGS[@]} - 1))); do
		c=${CONFIGS[$(((r - 1 + i) % ${#CONFIGS[@]}))]}
		if [ "$c" = postfix ]; then milter ""; else milter "unix:${MSOCK[${c#postfix+}]}"; fi
		both "$c"
	done
done
echo "# milter decisions logged: $(grep -c 'milter decision' "$OUT/rg.log" || true) (warn level: only refusals); errors: $(grep -c 'level=ERROR' "$OUT/rg.log" || true)"

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v k="$1" -v l="$2" -v c="$3" '$1==k && $2==l {print $c}' "$OUT/results" | median; }
# For each kind: the medians of throughput and of CPU per message of every
# configuration; the cost of each milter in throughput (the goal's figure)
# and as the CPU it adds per message (Postfix+Dovecot's increase plus the
# milter's own, over Postfix+Dovecot alone: what a CPU-bound host loses,
# the driver's CPU left out; steadier than msg/s on a loaded machine).
name() { case $1 in milter) echo "relayguard milter" ;; base) echo "relayguard at ${BASE:-}" ;; noop-go) echo "floor: no-op go-milter" ;; noop-c) echo "floor: no-op libmilter" ;; esac; }
for kind in auth mx; do
	a=$(col "$kind" postfix 3) pa=$(col "$kind" postfix 4)
	label=authenticated
	[ "$kind" = mx ] && label="MX (smtp-source)"
	for m in "${MILTERS[@]}"; do
		r=$(col "$kind" "postfix+$m" 3) pm=$(col "$kind" "postfix+$m" 4) rm=$(col "$kind" "postfix+$m" 5) cm=$(col "$kind" "postfix+$m" 6)
		printf 'COST [%s,%s] %-17s %-24s median msg/s: postfix %s, with it %s => cost %s %%;  median CPU ms/msg: postfix+dovecot %s alone, %s with it, milter %s (%s context switches) => +%s %% CPU (postfix+dovecot alone +%s %%)\n' \
			"$CPUS" "$SPOOL" "$label" "$(name "$m")" "$a" "$r" "$(echo "scale=1; 100 * ($a - $r) / $a" | bc)" "$pa" "$pm" "$rm" "$cm" "$(echo "scale=1; 100 * ($pm + $rm - $pa) / $pa" | bc)" "$(echo "scale=1; 100 * ($pm - $pa) / $pa" | bc)"
	done
done
