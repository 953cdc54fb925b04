#!/usr/bin/env bash
# What the audit trail costs. 1) The message path: relayguard signing with Ed25519 (the
# cheapest signature, so any overhead shows), 8 connections, 10 KB messages, with no audit
# log, with the sealed audit log (hash chain, checkpoint key), and, when OLD_RG names a
# binary built before chaining, with that binary's unsealed audit log; a fresh process per
# run, alternating, RUNS runs each. 2) The auditor's side: a rotated series of RECORDS
# sealed records (5 files, a checkpoint every 10,000) written by relayguard's own writer,
# then `audit verify --key`, `audit report` and `audit report --format html` timed.
# Prints markdown. Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MSGS=${MSGS:-2000}
RECORDS=${RECORDS:-1000000}
cargo build --release --locked -q --bin relayguard --example audit_series
RG=$PWD/target/release/relayguard
work=$(mktemp -d /tmp/relayguard-audit-bench.XXXXXX)
started=()
trap 'for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT

printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n' > "$work/gen.toml"
: > "$work/selectors.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector ed --algorithm ed25519 \
    --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z >/dev/null 2>&1
"$RG" audit keygen --out "$work/audit.key" >/dev/null
base() {
    printf '[milter]\nsocket = "unix:%s/rg.sock"\n[domains]\nprotected = ["tugraz.at"]\n' "$work"
    printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n'
}
base > "$work/none.toml"
{ base; printf '[audit]\nfile = "audit.log"\ncheckpoint_key = "audit.key"\n'; } > "$work/sealed.toml"
{ base; printf '[audit]\nfile = "audit.log"\n'; } > "$work/old.toml"
kinds=(none sealed)
[ -n "${OLD_RG:-}" ] && kinds+=(old)

declare -A rate cpu
for run in $(seq "$RUNS"); do
    for kind in "${kinds[@]}"; do
        rm -f "$work/rg.sock" "$work/audit.log"
        bin=$RG
        [ "$kind" = old ] && bin=$OLD_RG
        "$bin" run --config "$work/$kind.toml" >/dev/null 2>&1 &
        pid=$!
        started+=("$pid")
        for _ in $(seq 200); do [ -S "$work/rg.sock" ] && break; sleep 0.05; done
        out=$("$RG" bench --target "unix:$work/rg.sock" -n 8 -m "$MSGS" --size 10000 --pid "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        grep -q "signed $((8 * MSGS))," <<<"$out" || { echo "$out" >&2; exit 1; }
        if [ "$kind" != none ]; then
            lines=$(wc -l < "$work/audit.log")
            [ "$lines" -ge $((8 * MSGS)) ] || { echo "$kind: $lines audit lines" >&2; exit 1; }
        fi
        rate[$kind]+="$(sed -n 's/.*: \([0-9]*\) messages\/s.*/\1/p' <<<"$out") "
        cpu[$kind]+="$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out") "
    done
done
echo "| audit log | messages/s (runs) | server CPU ms/msg (runs) |"
echo "|---|---|---|"
for kind in "${kinds[@]}"; do
    echo "| $kind | ${rate[$kind]}| ${cpu[$kind]}|"
done

mkdir "$work/series"
target/release/examples/audit_series "$work/series" "$RECORDS" 5 "$work/audit.key"
cd "$work/series"
files=(audit.log.4 audit.log.3 audit.log.2 audit.log.1 audit.log)
size=$(cat "${files[@]}" | wc -c)
timed() { local s e; s=$(date +%s.%N); "$@" > "$work/out" || { cat "$work/out" >&2; exit 1; }; e=$(date +%s.%N); echo "$e - $s" | bc; }
t_verify=$(timed "$RG" audit verify --key "$work/audit.key.pub" "${files[@]}")
grep -q "chain intact: " "$work/out"
t_table=$(timed "$RG" audit report "${files[@]}")
t_html=$(timed "$RG" audit report --format html --key "$work/audit.key.pub" -o "$work/report.html" "${files[@]}")
echo
echo "| $RECORDS sealed records, 5 files, $((size / 1000000)) MB | seconds |"
echo "|---|---|"
echo "| audit verify --key | $t_verify |"
echo "| audit report | $t_table |"
echo "| audit report --format html --key ($(wc -c < "$work/report.html") bytes) | $t_html |"
