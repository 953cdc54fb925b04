#!/usr/bin/env bash
# Where a message's CPU goes: relayguard (release build, with its debug info) signing
# Ed25519, 10 KB, 8 connections, 1,000 logins from a sender map, with the packaged features
# on (audit log sealed with checkpoints and fsync "periodic", [abuse] signals in memory,
# metrics, logging), loaded by `relayguard bench` as Postfix 3.7 speaks, and sampled by
# `perf record` (root). Prints the share of samples per part of the message path and the
# CPU per message. Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
MSGS=${MSGS:-4000}
USERS=${USERS:-1000}
source bench/redis-relay.sh profile
"$RG" audit keygen --config "$work/gen.toml" --out "$work/checkpoint.key" >/dev/null
cat > "$work/relay.toml" <<CONF
[milter]
socket = "unix:$work/rg.sock"
[domains]
protected = ["tugraz.at"]
[senders]
login_map = "sender_login_maps"
[dkim]
selectors = "selectors.toml"
keys_dir = "keys"
[audit]
file = "$work/audit.log"
fsync = "periodic"
on_error = "tempfail"
checkpoint_key = "checkpoint.key"
checkpoint_minutes = 60
[metrics]
listen = "127.0.0.1:$((port + 1))"
[abuse]
CONF
rm -f "$work/rg.sock"
"$RG" run --config "$work/relay.toml" >"$work/relay.log" 2>&1 &
pid=$!
started+=("$pid")
for _ in $(seq 200); do [ -S "$work/rg.sock" ] && break; sleep 0.05; done
# Warm up, then sample the steady state.
"$RG" bench --target "unix:$work/rg.sock" -n 8 -m 200 --size 10000 \
    --login user --from user@tugraz.at --logins "$USERS" >/dev/null
perf record -q -F 4999 -g -p "$pid" -o "$work/perf.data" >/dev/null 2>&1 &
perf_pid=$!
started+=("$perf_pid")
sleep 0.5
out=$("$RG" bench --target "unix:$work/rg.sock" -n 8 -m "$MSGS" --size 10000 \
    --login user --from user@tugraz.at --logins "$USERS" --pid "$pid")
kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
grep -q "signed $((8 * MSGS))," <<<"$out" || { echo "$out" >&2; exit 1; }
echo "$out" | grep -E "messages/s|server:"
echo
# Self time per symbol, then grouped by what it does (bench/profile-groups.py).
perf report -i "$work/perf.data" --stdio --no-children --sort sym -g none --percent-limit 0 2>/dev/null \
    | python3 bench/profile-groups.py "$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out")"
