#!/usr/bin/env bash
# End-to-end relay throughput: smtp-source -> relay -> smtp-sink, for
# relayguard (bench/delivery/rgrelay: smtpd + durable spool + send limits +
# scheduler + outbound SMTP) and for Postfix relaying the same load to the
# same sink in the same run. The clock stops when the sink holds every
# message, so the figure includes queueing and delivery, not just
# acceptance. Needs root (a private Postfix instance), postfix, smtp-sink,
# smtp-source. Touches only 127.0.0.1 and a temporary directory.
#
# Usage: bench/delivery/run.sh [MESSAGES] [SESSIONS] [SIZE_BYTES] [ROUNDS]
# RG_SERVE=1 measures `relayguard serve` instead of bench/delivery/rgrelay.
# RG_DKIM="rsa ed25519" also measures, in the same rounds, one more
# relayguard per algorithm that DKIM-signs every message (key made by
# `relayguard dkim keygen`, [[dkim.key]] for the sender's domain src.test).
set -euo pipefail
N=${1:-5000}
S=${2:-20}
L=${3:-4096}
ROUNDS=${4:-3}
cd "$(dirname "$0")/../.."

[ "$(id -u)" = 0 ] || { echo "run as root (private Postfix instance)"; exit 1; }
for p in postfix smtp-sink smtp-source postconf; do
	command -v $p >/dev/null || PATH=$PATH:/usr/sbin
	command -v $p >/dev/null || { echo "missing $p (Debian package postfix)"; exit 1; }
done

W=$(mktemp -d /tmp/rgbench.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	postfix -c "$W/pf/conf" stop >/dev/null 2>&1 || true
	sleep 1
	for g in "${CGROUPS[@]}"; do rmdir "$g" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT

# CPU accounting: each server runs in a cpuacct cgroup of its own, so that
# the CPU time it spent per message is measured besides wall time (on a
# shared machine wall time mostly measures waiting for a core).
CG=/sys/fs/cgroup/cpuacct
CGROUPS=()
cg_dir() { echo "$CG/rgbench-$$-$1"; }
if [ -w "$CG" ]; then
	cg_exec() { # cg_exec NAME CMD...: run CMD inside cgroup NAME
		local d; d=$(cg_dir "$1"); shift
		sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$d" "$@"
	}
	cg_new() { mkdir -p "$(cg_dir "$1")"; CGROUPS+=("$(cg_dir "$1")"); }
	cg_usage() { cat "$(cg_dir "$1")/cpuacct.usage"; }
else
	cg_exec() { shift; "$@"; }
	cg_new() { :; }
	cg_usage() { echo 0; }
fi

port() { # a free loopback port
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		ss -ltn | grep -q "127.0.0.1:$p " || { echo $p; return; }
	done
}
wait_port() {
	for _ in $(seq 400); do
		(exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
		sleep 0.025
	done
	echo "port $1 never opened"; exit 1
}
now() { date +%s.%N; }

SINK=$(port)
mkdir -p "$W/sink"; chmod 777 "$W/sink"
smtp-sink -u postfix -d "$W/sink/%M." 127.0.0.1:$SINK 1024 &
PIDS+=($!)
wait_port $SINK

# relayguard
RG=$(port)
go build -o "$W/rgrelay" ./bench/delivery/rgrelay
cat >"$W/rg.toml" <<EOF
hostname = "rgbench.test"
mynetworks = ["127.0.0.0/8"]
local_domains = ["rgbench.test"]
[admin]
listen = ""
[[listener]]
name = "mx"
address = "127.0.0.1:$RG"
mode = "mx"
[limits]
max_connections_per_ip = 1000
[log]
level = "warn"
[delivery]
smarthost = "127.0.0.1:$SINK"
tls_policy = "none"
[delivery.rate_limits]
ip_messages_per_hour = 100000000
sender_domain_messages_per_hour = 100000000
EOF
go build -o "$W/relayguard" ./cmd/relayguard
# start_rg NAME PORT CONFIG: one relayguard relay with its own data dir.
start_rg() {
	cg_new "$1"
	if [ "${RG_SERVE:-0}" = 1 ]; then
		# The real `relayguard serve` (once it starts the delivery side).
		cg_exec "$1" "$W/relayguard" serve --config "$3" --data-dir "$W/$1-data" --create-data-dir 2>"$W/$1.log" &
	else
		cg_exec "$1" "$W/rgrelay" --config "$3" --data-dir "$W/$1-data" 2>"$W/$1.log" &
	fi
	PIDS+=($!)
	wait_port $2
}
start_rg rg $RG "$W/rg.toml"
DKIM_NAMES=()
DKIM_PORTS=()
for alg in ${RG_DKIM:-}; do
	p=$(port)
	sed "s/127.0.0.1:$RG\"/127.0.0.1:$p\"/" "$W/rg.toml" >"$W/rg-$alg.toml"
	"$W/relayguard" --data-dir "$W/rg-dkim-$alg-data" --create-data-dir dkim keygen src.test --algorithm $alg --selector bench >/dev/null
	printf '[[dkim.key]]\ndomain = "src.test"\nselector = "bench"\n' >>"$W/rg-$alg.toml"
	start_rg rg-dkim-$alg $p "$W/rg-$alg.toml"
	DKIM_NAMES+=("rg-dkim-$alg")
	DKIM_PORTS+=($p)
done

# Postfix: a private instance, relayhost = the sink, fsync as shipped.
PF=$(port)
mkdir -p "$W/pf/conf" "$W/pf/queue" "$W/pf/data"
chown postfix "$W/pf/data"
cp /etc/postfix/master.cf "$W/pf/conf/master.cf" 2>/dev/null || cp /usr/share/postfix/master.cf.dist "$W/pf/conf/master.cf"
sed -i "s/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:$PF inet n - n - - smtpd/" "$W/pf/conf/master.cf"
cat >"$W/pf/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $W/pf/queue
data_directory = $W/pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pfbench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file_prefixes = $W
maillog_file = $W/pf/maillog
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_client_connection_count_limit = 1000
EOF
cg_new pf
cg_exec pf postfix -c "$W/pf/conf" start >/dev/null 2>&1 || { script -qc "postfix -c $W/pf/conf start" /dev/null; exit 1; }
wait_port $PF

sinkcount() { find "$W/sink" -type f | wc -l; }

# measure NAME PORT CGROUP: prints accepted/s, end-to-end msg/s and the
# server's CPU time per message (and the messages/s one core would give)
measure() {
	local name=$1 p=$2 cg=$3 before t0 t1 t2 n u0 u1
	before=$(sinkcount)
	u0=$(cg_usage "$cg")
	t0=$(now)
	smtp-source -s $S -m $N -l $L -f sender@src.test -t rcpt@dst.test 127.0.0.1:$p
	t1=$(now)
	for _ in $(seq 12000); do
		n=$(($(sinkcount) - before))
		[ $n -ge $N ] && break
		sleep 0.01
	done
	t2=$(now)
	[ $n -ge $N ] || { echo "$name: only $n of $N messages reached the sink"; exit 1; }
	u1=$(cg_usage "$cg")
	awk -v n=$N -v a="$t0" -v b="$t1" -v c="$t2" -v name="$name" -v cpu=$((u1 - u0)) \
		'BEGIN { printf "%-18s  accept %7.1f msg/s   end-to-end %7.1f msg/s   (%.2fs)", name, n/(b-a), n/(c-a), c-a
		  if (cpu > 0) printf "   cpu %.3f ms/msg (%.0f msg/s per core)", cpu/n/1e6, 1e9*n/cpu
		  printf "\n" }'
}

echo "messages=$N sessions=$S size=$L rounds=$ROUNDS cores=$(nproc) postfix=$(postconf -d -h mail_version)"
# Warm up both (connection caches, page cache), then alternate rounds.
N0=$N; N=200; measure warm-rg $RG rg >/dev/null; measure warm-pf $PF pf >/dev/null
for i in "${!DKIM_PORTS[@]}"; do measure warm-dkim "${DKIM_PORTS[$i]}" "${DKIM_NAMES[$i]}" >/dev/null; done
N=$N0
for r in $(seq $ROUNDS); do
	measure relayguard $RG rg
	for i in "${!DKIM_PORTS[@]}"; do measure "${DKIM_NAMES[$i]}" "${DKIM_PORTS[$i]}" "${DKIM_NAMES[$i]}"; done
	measure postfix $PF pf
done
for l in rg "${DKIM_NAMES[@]}"; do
	echo "$l log: $(grep -c 'level=ERROR' "$W/$l.log" || true) error line(s), $(grep -c 'level=WARN' "$W/$l.log" || true) warning(s)"
	grep -m5 -E 'level=(ERROR|WARN)' "$W/$l.log" || true
done
# Every message a signing relay delivered carries its signature.
if [ ${#DKIM_NAMES[@]} -gt 0 ]; then
	want=$(( (ROUNDS * N + 200) * ${#DKIM_NAMES[@]} ))
	got=$(grep -l "^DKIM-Signature: " "$W"/sink/* | wc -l)
	echo "signed messages at the sink: $got (want $want)"
	[ "$got" -eq "$want" ] || exit 1
fi
