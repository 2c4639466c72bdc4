#!/usr/bin/env bash
# Throughput into the durable spool: relayguard vs Postfix, same machine,
# same run, load from Postfix's smtp-source. Then resident memory of
# relayguard with 10,000 idle connections.
#
#   RUNS=3 bench/serve/run.sh [MESSAGES]   (root; needs Debian package postfix)
#
# relayguard: MX listener; the recipient is a local account, so every
# message is spooled with fsync + rename + directory fsync (group commit)
# before 250, then "delivered" by the discard transport, as Postfix's is.
# Postfix 3.7: smtpd + cleanup on a private instance, queue files fsynced
# before 250 (Postfix default), delivered by the discard transport.
set -euo pipefail
cd "$(dirname "$0")/../.."
MSGS=${1:-5000}
OUT=$(mktemp -d /tmp/rgbench.XXXX)
chmod 755 "$OUT" # the postfix user must reach its queue directory
# Each server runs in its own cpuacct cgroup (v1, when the machine has it),
# so that every round also reports the CPU time the server spent per
# message: Postfix's smtpd, cleanup, qmgr and discard processes together,
# relayguard's one process. On a shared machine the wall-clock rate
# measures the neighbours too; CPU per message does not.
CG=/sys/fs/cgroup/cpuacct
cg_new() { [ -w "$CG" ] && mkdir "$CG/rgbench-$1-$$" && echo "$CG/rgbench-$1-$$"; }
cg_usage() { if [ -n "$1" ]; then cat "$1/cpuacct.usage"; else echo 0; fi; }
cleanup() {
	kill $(jobs -p) 2>/dev/null || true
	postfix -c "$OUT/pf" stop >/dev/null 2>&1 || true
	sleep 1
	for g in ${RGCG:-} ${PFCG:-}; do rmdir "$g" 2>/dev/null || true; done
	rm -rf "$OUT" # ~100 MB of spool, queue and logs per run
}
trap cleanup EXIT
RGCG=$(cg_new rg || true); PFCG=$(cg_new pf || true)
go build -o "$OUT/relayguard" ./cmd/relayguard
go build -o "$OUT/idleconns" ./bench/serve/idleconns

RGPORT=25251; PFPORT=25252
# Both servers hand what they accepted to a discard transport while the load
# runs (bench/delivery measures forwarding to smtp-sink).
cat >"$OUT/rg.toml" <<TOML
hostname = "bench.test"
local_domains = ["bench.test"]
[admin]
listen = ""
[delivery.transports]
"bench.test" = "discard"
[limits]
max_connections = 30000
max_connections_per_ip = 30000
max_connections_per_net = 30000
[[listener]]
name = "mx"
address = "127.0.0.1:$RGPORT"
mode = "mx"
TOML
echo pw | "$OUT/relayguard" --config "$OUT/rg.toml" --data-dir "$OUT/rgdata" --create-data-dir user add sink --password-stdin >/dev/null
(
	[ -n "$RGCG" ] && echo $BASHPID > "$RGCG/cgroup.procs"
	exec "$OUT/relayguard" --config "$OUT/rg.toml" --data-dir "$OUT/rgdata" serve 2>"$OUT/rg.log"
) &
RGPID=$!

# A private Postfix instance.
mkdir -p "$OUT/pf" "$OUT/pfq"
cp /etc/postfix/master.cf "$OUT/pf/master.cf" 2>/dev/null || cp /usr/share/postfix/master.cf.dist "$OUT/pf/master.cf"
sed -i "s/^smtp      inet.*/$PFPORT      inet  n       -       n       -       -       smtpd/" "$OUT/pf/master.cf"
cat >"$OUT/pf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $OUT/pfq
data_directory = $OUT/pfq/data
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.test
mydestination = bench.test
mynetworks = 127.0.0.0/8
local_transport = discard
local_recipient_maps =
alias_maps =
alias_database =
default_transport = discard
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
maillog_file = $OUT/postfix.log
maillog_file_prefixes = $OUT
CF
postfix -c "$OUT/pf" set-permissions >/dev/null 2>&1 || true
postfix -c "$OUT/pf" check
(
	[ -n "$PFCG" ] && echo $BASHPID > "$PFCG/cgroup.procs"
	postfix -c "$OUT/pf" start
)
sleep 2
postconf -c "$OUT/pf" -h mail_version | sed 's/^/postfix version: /'

run() { # name port sessions cgroup
	local start end c0 c1
	c0=$(cg_usage "$4")
	start=$(date +%s.%N)
	smtp-source -c -s "$3" -m "$MSGS" -l 2048 -f bench@client.test -t sink@bench.test "127.0.0.1:$2" >/dev/null
	end=$(date +%s.%N)
	sleep 1 # the delivery of the last messages
	c1=$(cg_usage "$4")
	echo "$1 sessions=$3 messages=$MSGS seconds=$(echo "$end - $start" | bc) msg_per_s=$(echo "$MSGS / ($end - $start)" | bc) cpu_us_per_msg=$(( (c1 - c0) / 1000 / MSGS ))"
}
# Rounds alternate between the two servers so that load from elsewhere on
# the machine hits both alike; compare medians.
for r in $(seq "${RUNS:-3}"); do
	for s in 20 50; do
		run relayguard $RGPORT $s "$RGCG"
		run postfix $PFPORT $s "$PFCG"
	done
done
"$OUT/idleconns" -addr 127.0.0.1:$RGPORT -n 10000 -pid $RGPID
