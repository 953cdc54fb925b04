#!/usr/bin/env bash
# Where a message's CPU goes: relayguard (release build, with its debug info) signing
# Ed25519, 10 KB, with the packaged features on (audit log sealed with checkpoints and fsync
# "periodic", [abuse] signals in memory, metrics, logging to a file), sampled by `perf
# record` (root). Prints the share of samples per part of the message path and the CPU per
# message. Every process started here is stopped by its PID.
#
#   bench/profile.sh             loaded by `relayguard bench` as Postfix 3.7 speaks:
#                                8 connections, 1,000 logins from a sender map
#   bench/profile.sh --postfix   loaded by a real Postfix (bench/postfix.sh): smtp-source,
#                                8 sessions, a server's status mail, unauthenticated
set -euo pipefail
cd "$(dirname "$0")/.."
MSGS=${MSGS:-4000}
USERS=${USERS:-1000}
mode=${1:-bench}
source bench/redis-relay.sh profile
chmod 755 "$work"
packaged_config "$work/relay.toml" selectors.toml
rm -f "$work/rg.sock"
"$RG" run --config "$work/relay.toml" >"$work/log/relay.log" 2>&1 &
pid=$!
started+=("$pid")
for _ in $(seq 200); do [ -S "$work/rg.sock" ] && break; sleep 0.05; done
record() { perf record -q -F 4999 -g -p "$pid" -o "$work/perf.data" >/dev/null 2>&1 & perf_pid=$!; started+=("$perf_pid"); sleep 0.5; }
case $mode in
    bench)
        # Warm up, then sample the steady state.
        "$RG" bench --target "unix:$work/rg.sock" -n 8 -m 200 --size 10000 \
            --login user --from user@tugraz.at --logins "$USERS" >/dev/null
        record
        out=$("$RG" bench --target "unix:$work/rg.sock" -n 8 -m "$MSGS" --size 10000 \
            --login user --from user@tugraz.at --logins "$USERS" --pid "$pid")
        kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
        grep -q "signed $((8 * MSGS))," <<<"$out" || { echo "$out" >&2; exit 1; }
        echo "$out" | grep -E "messages/s|server:"
        cpu=$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out")
        ;;
    --postfix)
        PF_MSGS=$MSGS
        source bench/postfix.sh
        record
        read -r rate busy cpu < <(postfix_run "unix:$work/rg.sock" "$pid")
        kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
        echo "$PF_MSGS messages through Postfix: $rate messages/s, both cores $busy % busy"
        echo "server: $cpu ms CPU per message"
        ;;
    *) echo "usage: $0 [--postfix]" >&2; exit 2 ;;
esac
echo
# Self time per symbol, then grouped by what it does (bench/profile-groups.py).
perf report -i "$work/perf.data" --stdio --no-children --sort sym -g none --percent-limit 0 2>/dev/null \
    | python3 bench/profile-groups.py "$cpu"
