#!/usr/bin/env bash
# Benchmarks relayguard against OpenDKIM on this machine, in one run: the same load
# (relayguard bench), RSA-2048 for d=tugraz.at, runs alternating A B A B with a fresh
# process per run, 3 runs, medians. Prints one table (markdown) on standard output.
# Needs root (installs opendkim from Debian if missing). Loopback and unix sockets only.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MSGS_10K=${MSGS_10K:-500}
MSGS_1M=${MSGS_1M:-40}

command -v opendkim >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q opendkim >&2
cargo build --release --locked -q
RG=$PWD/target/release/relayguard
work=$(mktemp -d /tmp/relayguard-bench.XXXXXX)
chmod 755 "$work"
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/keys"
install -d -o opendkim "$work/od"

# One RSA-2048 key and one Ed25519 key; OpenDKIM gets the same RSA key.
printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n' > "$work/gen.toml"
: > "$work/selectors.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector rsa --algorithm rsa-2048 --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z --print 2>/dev/null | grep -v _domainkey >> "$work/selectors-rsa.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector ed --algorithm ed25519 --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z --print 2>/dev/null | grep -v _domainkey >> "$work/selectors-ed.toml"
for kind in rsa ed; do
    cat > "$work/rg-$kind.toml" <<TOML
[milter]
socket = "unix:$work/rg.sock"
socket_mode = "0666"
[domains]
protected = ["tugraz.at"]
[dkim]
selectors = "selectors-$kind.toml"
keys_dir = "keys"
TOML
done
sed "s#unix:$work/rg.sock#inet:18991@127.0.0.1#" "$work/rg-rsa.toml" > "$work/rg-tcp.toml"
chown opendkim "$work/keys/tugraz.at.rsa.pem"
cat > "$work/opendkim.conf" <<CONF
Syslog no
Mode s
Domain tugraz.at
Selector rsa
KeyFile $work/keys/tugraz.at.rsa.pem
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
InternalHosts 0.0.0.0/0
Socket local:$work/od/od.sock
UMask 000
PidFile $work/od/opendkim.pid
UserID opendkim
RequireSafeKeys false
CONF

wait_socket() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; return 1; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# run NAME START_CMD TARGET SOCKET_OR_PORT BENCH_ARGS... -> prints "rate cpu_ms rss_mib"
measure() {
    local name=$1 config=$2 target=$3 wait=$4; shift 4
    local pid
    case $name in
        opendkim) opendkim -f -x "$work/opendkim.conf" >/dev/null 2>&1 & pid=$! ;;
        *) "$RG" run --config "$config" >/dev/null 2>&1 & pid=$! ;;
    esac
    case $wait in /*) wait_socket "$wait" ;; *) wait_port "$wait" ;; esac
    local out total
    out=$("$RG" bench --target "$target" --pid "$pid" "$@")
    total=$(sed -n 's/^\([0-9]*\) messages of.*/\1/p' <<<"$out")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -f "$work/rg.sock" "$work/od/od.sock"
    local rate cpu rss
    rate=$(sed -n 's/.*s: \([0-9]*\) messages\/s.*/\1/p' <<<"$out")
    cpu=$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out")
    rss=$(sed -n 's/.*peak RSS \([0-9.]*\) MiB.*/\1/p' <<<"$out")
    grep -q "signed $total, accepted unsigned 0, rejected 0, tempfailed 0" <<<"$out" || { echo "$name: not every message was signed: $out" >&2; exit 1; }
    echo "$rate $cpu $rss"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

row() {  # row LABEL NAME CONFIG TARGET WAIT ARGS...
    local label=$1; shift
    local rates=() cpus=() rsss=()
    for _ in $(seq "$RUNS"); do
        read -r r c m < <(measure "$@")
        rates+=("$r"); cpus+=("$c"); rsss+=("$m")
    done
    printf '%s %s %s %s\n' "$label" "$(printf '%s\n' "${rates[@]}" | median)" "$(printf '%s\n' "${cpus[@]}" | median)" "$(printf '%s\n' "${rsss[@]}" | median)"
}

results=$work/results
: > "$results"
for size_msgs in "10000 $MSGS_10K" "1000000 $MSGS_1M"; do
    read -r size msgs <<<"$size_msgs"
    # Alternate A B A B: each row() call runs RUNS fresh processes in turn.
    for _ in 1; do
        row "relayguard-rsa-$size" relayguard "$work/rg-rsa.toml" "unix:$work/rg.sock" "$work/rg.sock" -c 8 -m "$msgs" --size "$size" >> "$results"
        row "opendkim-rsa-$size" opendkim - "unix:$work/od/od.sock" "$work/od/od.sock" -c 8 -m "$msgs" --size "$size" >> "$results"
    done
done
row "relayguard-ed25519-10000" relayguard "$work/rg-ed.toml" "unix:$work/rg.sock" "$work/rg.sock" -c 8 -m "$MSGS_10K" --size 10000 >> "$results"
row "relayguard-tcp-rsa-10000" relayguard "$work/rg-tcp.toml" "inet:18991@127.0.0.1" 18991 -c 8 -m "$MSGS_10K" --size 10000 >> "$results"
row "relayguard-100x10MB" relayguard "$work/rg-rsa.toml" "unix:$work/rg.sock" "$work/rg.sock" -c 100 -m 1 --size 10000000 >> "$results"
row "opendkim-100x10MB" opendkim - "unix:$work/od/od.sock" "$work/od/od.sock" -c 100 -m 1 --size 10000000 >> "$results"

get() { awk -v k="$1" -v f="$2" '$1==k {print $f}' "$results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "| load | relayguard msg/s | OpenDKIM msg/s | ratio | relayguard CPU ms/msg | OpenDKIM CPU ms/msg | relayguard peak RSS MiB | OpenDKIM peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for size in 10000 1000000; do
    echo "| RSA-2048, $size bytes, 8 connections | $(get relayguard-rsa-$size 2) | $(get opendkim-rsa-$size 2) | $(ratio "$(get relayguard-rsa-$size 2)" "$(get opendkim-rsa-$size 2)") | $(get relayguard-rsa-$size 3) | $(get opendkim-rsa-$size 3) | $(get relayguard-rsa-$size 4) | $(get opendkim-rsa-$size 4) |"
done
echo "| 100 concurrent 10 MB messages | $(get relayguard-100x10MB 2) | $(get opendkim-100x10MB 2) | $(ratio "$(get relayguard-100x10MB 2)" "$(get opendkim-100x10MB 2)") | $(get relayguard-100x10MB 3) | $(get opendkim-100x10MB 3) | $(get relayguard-100x10MB 4) | $(get opendkim-100x10MB 4) |"
echo
echo "| relayguard only | msg/s | CPU ms/msg | peak RSS MiB |"
echo "|---|---|---|---|"
echo "| Ed25519, 10000 bytes, unix | $(get relayguard-ed25519-10000 2) | $(get relayguard-ed25519-10000 3) | $(get relayguard-ed25519-10000 4) |"
echo "| RSA-2048, 10000 bytes, TCP (ratio to unix: $(ratio "$(get relayguard-tcp-rsa-10000 2)" "$(get relayguard-rsa-10000 2)")) | $(get relayguard-tcp-rsa-10000 2) | $(get relayguard-tcp-rsa-10000 3) | $(get relayguard-tcp-rsa-10000 4) |"
