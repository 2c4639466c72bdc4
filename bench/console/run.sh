#!/usr/bin/env bash
# The web console's JSON API at size: relayguard serve with 100,000 bans in
# force and 50,000 queued messages, each endpoint the page uses asked 50
# times; `relayguard ban list` and `queue list` on the same data in the
# same run.
#
#   bench/console/run.sh [BANS [MESSAGES]]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(mktemp -d /tmp/rgbench.XXXX)
trap 'rm -rf "$OUT"' EXIT
go build -o "$OUT/relayguard" ./cmd/relayguard
go run ./bench/console -bin "$OUT/relayguard" -bans "${1:-100000}" -queue "${2:-50000}"
