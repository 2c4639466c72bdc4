#!/usr/bin/env bash
# Postfix's throughput with and without relayguard milter, same machine,
# same run: authenticated submissions (the milter's full path: {auth_authen},
# envelope and header From: binding, send-limit counters and the accounts'
# observations in the state store, every message) from bench/milter's
# driver, and unauthenticated MX mail from Postfix's smtp-source (the
# milter accepts at MAIL FROM). Postfix 3.7 private instance with Dovecot
# SASL, messages handed to the discard transport.
#
#   RUNS=3 CONNS=20 MSGS=100 bench/milter/run.sh      (root; postfix, dovecot-core)
#   STORE=redis://127.0.0.1:6379/0 bench/milter/run.sh  (counters in Redis)
#   LIMITS=false bench/milter/run.sh   (smtp_send_limits = false: the policy
#                                       service counts the limits)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
CONNS=${CONNS:-20}
MSGS=${MSGS:-100}
USERS=${USERS:-50}
RCPTS=${RCPTS:-2}
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
OUT=$(mktemp -d /tmp/rgmilter.XXXX)
chmod 755 "$OUT"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	postfix -c "$OUT/pf" stop >/dev/null 2>&1 || true
	doveadm -c "$OUT/dovecot.conf" stop >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	rm -rf "$OUT"
}
trap cleanup EXIT
go build -o "$OUT/relayguard" ./cmd/relayguard
go build -o "$OUT/miltersubmit" ./bench/milter

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
dovecot -c "$OUT/dovecot.conf"

# relayguard milter: limits far above the load (the counting is measured,
# not the refusals), the accounts' detection on (volume_minimum raised so
# that 50 new accounts sending hundreds of messages are not suspended).
cat >"$OUT/rg.toml" <<TOML
hostname = "bench.test"
local_domains = ["example.test"]
[log]
level = "warn"
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
"$OUT/relayguard" --config "$OUT/rg.toml" --data-dir "$OUT/rgdata" milter 2>"$OUT/rg.log" &
PIDS+=($!)

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
postfix -c "$OUT/pf" start
for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.5; done
for i in $(seq 60); do [ -S "$OUT/milter.sock" ] && break; sleep 0.5; done

milter() {
	postconf -c "$OUT/pf" -e "smtpd_milters = $1"
	postfix -c "$OUT/pf" reload >/dev/null 2>&1
	sleep 2
}
mx() { # unauthenticated MX mail with smtp-source; prints msg/s
	local n=$((CONNS * MSGS)) t0 t1
	t0=$(date +%s.%N)
	smtp-source -s "$CONNS" -m "$n" -l 2048 -f sender@remote.test -t rcpt@example.test "127.0.0.1:$PORT"
	t1=$(date +%s.%N)
	echo "$1 mx (smtp-source)  conns=$CONNS accepted=$n rate=$(echo "$n / ($t1 - $t0)" | bc) msg/s"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; $CONNS sessions x $MSGS messages, $RCPTS recipients, $USERS logins; store=${STORE:-sqlite}; smtp_send_limits=${LIMITS:-true}"
for r in $(seq "$RUNS"); do
	milter ""
	"$OUT/miltersubmit" -name "postfix" -addr "127.0.0.1:$PORT" -users "$USERS" -conns "$CONNS" -msgs "$MSGS" -rcpts "$RCPTS"
	mx "postfix        "
	milter "unix:$OUT/milter.sock"
	"$OUT/miltersubmit" -name "postfix+milter" -addr "127.0.0.1:$PORT" -users "$USERS" -conns "$CONNS" -msgs "$MSGS" -rcpts "$RCPTS"
	mx "postfix+milter "
done
echo "# milter decisions logged: $(grep -c 'milter decision' "$OUT/rg.log" || true) (warn level: only refusals); errors: $(grep -c 'level=ERROR' "$OUT/rg.log" || true)"
