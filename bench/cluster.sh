#!/usr/bin/env bash
# What one message costs the cluster's shared Redis: relayguard as a campus relay runs it
# (external class with hourly and per-message limits, account locks, [abuse] signals;
# Ed25519, 10 KB, 8 connections, USERS logins) against a private redis-server on loopback.
# Redis's own counters (CONFIG RESETSTAT after start) give commands, round trips (reads
# processed) and bytes per message, and which commands they are. The figures for 2 and 10
# relays in docs/operations.md come from here. Every process started here is stopped by
# its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
MSGS=${MSGS:-500}
USERS=${USERS:-1000}
source bench/redis-relay.sh cluster
cat > "$work/relay.toml" <<CONF
[milter]
socket = "unix:$work/rg.sock"
[domains]
protected = ["tugraz.at"]
[clients]
internal_networks = ["10.0.0.0/8"]
[senders]
login_map = "sender_login_maps"
[dkim]
selectors = "selectors.toml"
keys_dir = "keys"
[limits]
store = "redis"
[limits.redis]
url = "redis://127.0.0.1:$port/"
prefix = "bench$$:"
[limits.external]
messages_per_hour = 1000000
recipients_per_message = 20
authentications_per_window = 150
[limits.lock]
ownership_refusals = 10
ownership_window_minutes = 10
limit_hits_per_day = 50
[abuse]
CONF

rm -f "$work/rg.sock"
"$RG" run --config "$work/relay.toml" >/dev/null 2>&1 &
pid=$!
started+=("$pid")
for _ in $(seq 200); do [ -S "$work/rg.sock" ] && break; sleep 0.05; done
stat() { redis-cli -p "$port" INFO stats | sed -n "s/^$1:\([0-9]*\)\r$/\1/p"; }
per() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%.2f", a / n }'; }
# One connection: each read Redis processes is one round trip a message waited for.
redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
solo=$("$RG" bench --target "unix:$work/rg.sock" -n 1 -m "$MSGS" --size 10000 \
    --login user --from user@tugraz.at --logins "$USERS")
grep -q "signed $MSGS," <<<"$solo" || { echo "$solo" >&2; exit 1; }
sequential=$(per "$(stat total_reads_processed)" "$MSGS")
# Eight connections: what Redis serves per message under load.
redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
out=$("$RG" bench --target "unix:$work/rg.sock" -n 8 -m "$MSGS" --size 10000 \
    --login user --from user@tugraz.at --logins "$USERS" --pid "$pid")
n=$((8 * MSGS))
grep -q "signed $n," <<<"$out" || { echo "$out" >&2; exit 1; }
echo "$n messages from $USERS logins through one relay, 8 connections ($(sed -n 's/.*: \([0-9]*\) messages\/s.*/\1/p' <<<"$out") messages/s):"
echo
echo "| per message | Redis |"
echo "|---|---|"
echo "| commands | $(per "$(stat total_commands_processed)" "$n") |"
echo "| round trips a message waits for (one connection) | $sequential |"
echo "| reads Redis processes (8 connections share them) | $(per "$(stat total_reads_processed)" "$n") |"
echo "| bytes to Redis / from Redis | $(per "$(stat total_net_input_bytes)" "$n") / $(per "$(stat total_net_output_bytes)" "$n") |"
echo
echo "| command | per message |"
echo "|---|---|"
redis-cli -p "$port" INFO commandstats | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),.*/\1 \2/p' \
    | grep -v -e '^config' -e '^info' -e '^script' \
    | while read -r cmd calls; do echo "| $cmd | $(per "$calls" "$n") |"; done
echo
echo "Redis used memory after the run: $(redis-cli -p "$port" INFO memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')"
kill "$pid"; wait "$pid" 2>/dev/null || true
