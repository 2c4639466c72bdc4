#!/usr/bin/env bash
# Peak memory of the server under N concurrent password attempts (issue 12
# item 2): relayguard serve after the AUTH limiter and hashing budget,
# relayguard before them (BEFORE, a git ref), and Dovecot 2.3 checking the
# same argon2id hash (m=19 MiB, t=2, p=1) in the same run.
#
#   bench/auth/run.sh [N...]        (root; Debian packages dovecot-imapd, argon2)
#   BEFORE=<git ref> bench/auth/run.sh 100 1000
#
# Shapes (bench/auth/authflood): "oneaddr" — every attempt from one address
# (the issue's guesser); "onenet" — the fresh addresses of one /24 (each may
# try once: a prefix cap never bites an address that did not fail);
# "spread" — each client its own /24 and fresh address, so no limit bites
# and only the bound on concurrent hashing holds memory down (the worst
# case). Every attempt is a wrong
# password for an existing user, sent by all connections at the same moment
# after they were greeted. relayguard: implicit-TLS submissions with AUTH
# PLAIN, defaults otherwise (auth.hash_memory automatic). Dovecot: IMAP
# LOGIN on loopback, passwd-file, its defaults otherwise.
#
# The BEFORE build is run at N <= 100 only: it hashes every attempt at once
# (19 MiB each), and 1,000 would ask for ~19 GB on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
NS=("${@:-100 1000}")
NS=(${NS[*]})
BEFORE=${BEFORE:-3e631f3} # main just before the issue 12 AUTH limiter landed
OUT=$(mktemp -d /tmp/rgauth.XXXX)
chmod 755 "$OUT"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$OUT/dc/run/master.pid" ] && kill "$(cat "$OUT/dc/run/master.pid")" 2>/dev/null; sleep 1; rm -rf "$OUT"' EXIT
go build -o "$OUT/relayguard" ./cmd/relayguard
go build -o "$OUT/authflood" ./bench/auth/authflood
mkdir -p "$OUT/before"
git archive "$BEFORE" | tar -x -C "$OUT/before"
(cd "$OUT/before" && go build -o "$OUT/relayguard-before" ./cmd/relayguard)

PORT=25465
conf() {
	cat >"$1" <<TOML
hostname = "bench.test"
local_domains = ["bench.test"]
[admin]
listen = ""
[limits]
max_connections = 30000
max_connections_per_ip = 30000
max_connections_per_net = 30000
[[listener]]
name = "submissions"
address = "127.0.0.1:$PORT"
mode = "submissions"
TOML
}

# run BIN NAME SHAPE N: a fresh serve, one flood, its peak.
run_rg() {
	local bin=$1 name=$2 shape=$3 n=$4 d="$OUT/data-$2-$3-$4"
	conf "$OUT/rg.toml"
	mkdir -p "$d"
	echo 'correct horse battery staple' | "$bin" --config "$OUT/rg.toml" --data-dir "$d" user add alice --password-stdin --create-data-dir >/dev/null 2>&1 ||
		echo 'correct horse battery staple' | "$bin" --config "$OUT/rg.toml" --data-dir "$d" user add alice --password-stdin >/dev/null
	"$bin" --config "$OUT/rg.toml" --data-dir "$d" serve 2>"$d.log" &
	local pid=$!
	for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
	sleep 0.5
	local idle
	idle=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
	printf '%-18s %-7s N=%-5s idle=%4d MB  ' "$name" "$shape" "$n" $((idle / 1024))
	"$OUT/authflood" -addr 127.0.0.1:$PORT -proto smtps -n "$n" -shape "$shape" -user alice -pids $pid
	kill $pid; wait $pid 2>/dev/null || true
}

# Dovecot: a private instance with the same argon2id parameters.
HASH=$(printf 'correct horse battery staple' | argon2 "$(head -c 12 /dev/urandom | base64)" -id -t 2 -k 19456 -p 1 -e)
mkdir -p "$OUT/dc/run" "$OUT/dc/state" "$OUT/dc/home"
chown dovecot:dovecot "$OUT/dc/state"
echo "alice:{ARGON2ID}$HASH::::$OUT/dc/home" >"$OUT/dc/passwd"
cat >"$OUT/dc/dovecot.conf" <<CONF
base_dir = $OUT/dc/run
state_dir = $OUT/dc/state
log_path = $OUT/dc/log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_process_limit = 2000
default_client_limit = 4000
default_vsz_limit = 0
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = $OUT/dc/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$OUT/dc/home
}
service imap-login {
  inet_listener imap {
    port = 25143
  }
}
service anvil {
  client_limit = 8000
}
service auth {
  client_limit = 8000
}
CONF
run_dc() {
	local n=$1
	dovecot -c "$OUT/dc/dovecot.conf"
	for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/25143) 2>/dev/null && break; sleep 0.1; done
	sleep 0.5
	local pid
	pid=$(cat "$OUT/dc/run/master.pid")
	printf '%-18s %-7s N=%-5s                 ' "dovecot-2.3" spread "$n"
	"$OUT/authflood" -addr 127.0.0.1:25143 -proto imap -n "$n" -shape spread -user alice -pids "$pid"
	doveadm -c "$OUT/dc/dovecot.conf" stop 2>/dev/null || kill "$pid"
	sleep 1
}

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); before=$BEFORE after=$(git rev-parse --short HEAD)"
for n in "${NS[@]}"; do
	for shape in oneaddr onenet spread; do
		run_rg "$OUT/relayguard" relayguard "$shape" "$n"
		if [ "$n" -le 100 ]; then run_rg "$OUT/relayguard-before" relayguard-before "$shape" "$n"; fi
	done
	run_dc "$n"
done
