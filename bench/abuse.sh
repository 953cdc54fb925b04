#!/usr/bin/env bash
# What the stolen-account signals cost a message: relayguard signing with Ed25519 (the
# cheapest signature, so any overhead shows), 10 KB, 8 connections, USERS logins, without
# and with [abuse], with signals in memory and in a private redis-server on loopback (where
# the baseline already makes the account-lock round trip); a fresh process per run,
# alternating, RUNS runs each. Prints markdown. Every process started here is stopped by
# its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MSGS=${MSGS:-2000}
USERS=${USERS:-1000}
source bench/redis-relay.sh abuse
common="[milter]
socket = \"unix:$work/rg.sock\"
[domains]
protected = [\"tugraz.at\"]
[senders]
login_map = \"sender_login_maps\"
[dkim]
selectors = \"selectors.toml\"
keys_dir = \"keys\""
redis="[limits]
store = \"redis\"
[limits.redis]
url = \"redis://127.0.0.1:$port/\"
prefix = \"bench$$:\""
printf '%s\n' "$common" > "$work/memory-off.toml"
printf '%s\n[abuse]\n' "$common" > "$work/memory-on.toml"
printf '%s\n%s\n' "$common" "$redis" > "$work/redis-off.toml"
printf '%s\n%s\n[abuse]\n' "$common" "$redis" > "$work/redis-on.toml"
kinds=(memory-off memory-on redis-off redis-on)

declare -A rate cpu p99
for run in $(seq "$RUNS"); do
    for kind in "${kinds[@]}"; do
        rm -f "$work/rg.sock"
        "$RG" run --config "$work/$kind.toml" >/dev/null 2>&1 &
        pid=$!
        started+=("$pid")
        for _ in $(seq 200); do [ -S "$work/rg.sock" ] && break; sleep 0.05; done
        out=$("$RG" bench --target "unix:$work/rg.sock" -n 8 -m "$MSGS" --size 10000 \
            --login user --from user@tugraz.at --logins "$USERS" --pid "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        grep -q "signed $((8 * MSGS))," <<<"$out" || { echo "$kind: $out" >&2; exit 1; }
        rate[$kind]+="$(sed -n 's/.*: \([0-9]*\) messages\/s.*/\1/p' <<<"$out") "
        cpu[$kind]+="$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out") "
        p99[$kind]+="$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n 1) "
    done
done
keys=$(redis-cli -p "$port" --raw KEYS "bench$$:abuse:*" | wc -l)
echo "| store, [abuse] | messages/s (runs) | server CPU ms/msg (runs) | p99 ms (runs) |"
echo "|---|---|---|---|"
for kind in "${kinds[@]}"; do
    echo "| $kind | ${rate[$kind]}| ${cpu[$kind]}| ${p99[$kind]}|"
done
echo
echo "Redis keys of the signals after the runs: $keys for $USERS logins; used memory $(redis-cli -p "$port" INFO memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')"
