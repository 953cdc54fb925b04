#!/usr/bin/env bash
# What waiting for DNS costs a message: relayguard signing with Ed25519 (the cheapest
# signature, so any overhead shows) with require_dns = false and = true (the record served
# by a private BIND on loopback, checked off the message path), 8 connections, a fresh
# process per run, alternating, RUNS runs each. Prints markdown. Every process started here
# is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MSGS=${MSGS:-2000}
cargo build --release --locked -q
RG=$PWD/target/release/relayguard
work=$(mktemp -d /tmp/relayguard-rotation-bench.XXXXXX)
chmod 755 "$work"   # named runs as user bind
started=()
trap 'for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

# A key, its record in a private BIND zone.
printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n' > "$work/gen.toml"
: > "$work/selectors.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector ed --algorithm ed25519 \
    --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z --print 2>/dev/null > "$work/out"
grep -v _domainkey "$work/out" > "$work/selectors.toml"
record=$(grep _domainkey "$work/out")
mkdir -p "$work/dns" "$work/keys"
tsig-keygen -a hmac-sha256 k > "$work/dns/tsig.key"
cat > "$work/dns/named.conf" <<CONF
include "$work/dns/tsig.key";
controls { };
options { directory "$work/dns"; listen-on port $port { 127.0.0.1; }; listen-on-v6 { none; };
  pid-file "$work/dns/named.pid"; recursion no; dnssec-validation no; allow-query { 127.0.0.1; }; notify no; };
zone "tugraz.at" { type primary; file "$work/dns/zone"; };
CONF
{ printf '$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n'; echo "$record"; } > "$work/dns/zone"
chown -R bind:bind "$work/dns"
named -c "$work/dns/named.conf" -g -u bind >/dev/null 2>&1 &
started+=($!)
for _ in $(seq 100); do dig +short -p "$port" @127.0.0.1 SOA tugraz.at | grep -q . && break; sleep 0.05; done
dig +short -p "$port" @127.0.0.1 TXT ed._domainkey.tugraz.at | grep -q DKIM1 || { echo "named does not serve the record" >&2; exit 1; }

for kind in off on; do
    {
        printf '[milter]\nsocket = "unix:%s/rg.sock"\n[domains]\nprotected = ["tugraz.at"]\n' "$work"
        printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n'
        if [ "$kind" = on ]; then
            printf 'require_dns = true\n[dkim.dns]\nnameservers = ["127.0.0.1:%s"]\n' "$port"
        fi
    } > "$work/$kind.toml"
done

declare -A rate cpu
for run in $(seq "$RUNS"); do
    for kind in off on; do
        rm -f "$work/rg.sock"
        "$RG" run --config "$work/$kind.toml" >/dev/null 2>&1 &
        pid=$!
        started+=("$pid")
        for _ in $(seq 200); do [ -S "$work/rg.sock" ] && break; sleep 0.05; done
        sleep 0.5   # the first DNS check
        out=$("$RG" bench --target "unix:$work/rg.sock" -n 8 -m "$MSGS" --size 10000 --pid "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        grep -q "signed $((8 * MSGS))," <<<"$out" || { echo "$out" >&2; exit 1; }
        rate[$kind]+="$(sed -n 's/.*: \([0-9]*\) messages\/s.*/\1/p' <<<"$out") "
        cpu[$kind]+="$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out") "
    done
done
echo "| require_dns | messages/s (runs) | server CPU ms/msg (runs) |"
echo "|---|---|---|"
for kind in off on; do
    echo "| $kind | ${rate[$kind]}| ${cpu[$kind]}|"
done
