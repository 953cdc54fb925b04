#!/usr/bin/env bash
# Benchmarks relayguard against OpenDKIM on this machine, in one run: the same load
# (relayguard bench), RSA-2048 for d=tugraz.at, runs alternating A B A B with a fresh
# process per run, 3 runs, medians. Prints one table (markdown) on standard output.
# Also the signing ceiling (ring alone) and runs through a real Postfix. Needs root
# (installs opendkim and postfix from Debian if missing). Loopback and unix sockets only.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MSGS_10K=${MSGS_10K:-500}
MSGS_1M=${MSGS_1M:-40}
# Ed25519 messages are cheap: more of them, so that /proc's 10 ms CPU ticks resolve the
# per-message figure to about 0.001 ms.
MSGS_ED=${MSGS_ED:-2000}

command -v opendkim >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q opendkim >&2
cargo build --release --locked -q
RG=$PWD/target/release/relayguard
work=$(mktemp -d /tmp/relayguard-bench.XXXXXX)
chmod 755 "$work"
# Every process this script starts is recorded here and stopped by its PID on exit.
started=()
stop_started() { for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_started; rm -rf "$work"' EXIT
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
[clients]
internal_networks = ["127.0.0.0/8"]
# Postfix's status mail (smtp-source from 127.0.0.1) comes unauthenticated as monitor@.
require_name = "none"
status_senders = ["monitor@tugraz.at"]
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
    started+=("$pid")
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
# med FILE LABEL FIELD: the median of FIELD over the lines of FILE for LABEL.
med() { awk -v k="$2" -v f="$3" '$1==k {print $f}' "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

runs=$work/runs
: > "$runs"
# once LABEL NAME CONFIG TARGET WAIT ARGS...: one fresh process, one line in $runs.
once() { local label=$1; shift; echo "$label $(measure "$@")" >> "$runs"; }
# Rows are measured A B A B (relayguard and OpenDKIM in turn), RUNS times each.
for _ in $(seq "$RUNS"); do
    for size_msgs in "10000 $MSGS_10K" "1000000 $MSGS_1M"; do
        read -r size msgs <<<"$size_msgs"
        once "relayguard-rsa-$size" relayguard "$work/rg-rsa.toml" "unix:$work/rg.sock" "$work/rg.sock" -n 8 -m "$msgs" --size "$size"
        once "opendkim-rsa-$size" opendkim - "unix:$work/od/od.sock" "$work/od/od.sock" -n 8 -m "$msgs" --size "$size"
    done
    once "relayguard-100x10MB" relayguard "$work/rg-rsa.toml" "unix:$work/rg.sock" "$work/rg.sock" -n 100 -m 1 --size 10000000
    once "opendkim-100x10MB" opendkim - "unix:$work/od/od.sock" "$work/od/od.sock" -n 100 -m 1 --size 10000000
    once "relayguard-ed25519-10000" relayguard "$work/rg-ed.toml" "unix:$work/rg.sock" "$work/rg.sock" -n 8 -m "$MSGS_ED" --size 10000
    once "relayguard-tcp-rsa-10000" relayguard "$work/rg-tcp.toml" "inet:18991@127.0.0.1" 18991 -n 8 -m "$MSGS_10K" --size 10000
done

# The ceiling: ring signing the same RSA-2048 key on 2 threads with nothing else to do.
ceiling=$("$RG" bench --ceiling "$work/keys/tugraz.at.rsa.pem" --threads 2 --seconds 3 | sed -n 's/^signing ceiling: \([0-9]*\) .*/\1/p')

# Through Postfix: smtp-source -> Postfix -> milter -> smtp-sink, end to end (until the
# queue is empty), with no milter, with OpenDKIM, with relayguard (RSA-2048, and Ed25519 to
# show what the RSA signature itself costs); in turn.
source bench/postfix.sh
# pf NAME: one run through Postfix with no milter, OpenDKIM or relayguard (RSA-2048, and
# Ed25519 to show what the RSA signature itself costs) -> "messages/s busy-% milter-ms".
pf() {
    local pid="" milter=""
    case $1 in
        opendkim) opendkim -f -x "$work/opendkim.conf" >/dev/null 2>&1 & pid=$!; wait_socket "$work/od/od.sock"; milter="unix:$work/od/od.sock" ;;
        relayguard) "$RG" run --config "$work/rg-rsa.toml" >/dev/null 2>&1 & pid=$!; wait_socket "$work/rg.sock"; milter="unix:$work/rg.sock" ;;
        relayguard-ed25519) "$RG" run --config "$work/rg-ed.toml" >/dev/null 2>&1 & pid=$!; wait_socket "$work/rg.sock"; milter="unix:$work/rg.sock" ;;
    esac
    [ -n "$pid" ] && started+=("$pid")
    postfix_run "$milter" "$pid"
    [ -n "$pid" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
    rm -f "$work/rg.sock" "$work/od/od.sock"
}
: > "$work/pf-runs"
for _ in $(seq "$RUNS"); do
    for name in none opendkim relayguard relayguard-ed25519; do
        echo "$name $(pf "$name")" >> "$work/pf-runs"
    done
done
pfget() { med "$work/pf-runs" "$1" "${2:-2}"; }
get() { med "$runs" "$1" "$2"; }
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
echo
echo "| ceiling and Postfix | messages/s | ratio | both cores busy |"
echo "|---|---|---|---|"
echo "| ring RSA-2048 signing alone, 2 threads (ceiling) | $ceiling | relayguard 10 KB at $(ratio "$(get relayguard-rsa-10000 2)" "$ceiling") of it | |"
echo "| Postfix, no milter (smtp-source, 8 sessions, 10 KB, until delivered) | $(pfget none) | 1.00 | $(pfget none 3) % |"
echo "| Postfix with OpenDKIM | $(pfget opendkim) | $(ratio "$(pfget opendkim)" "$(pfget none)") | $(pfget opendkim 3) % |"
echo "| Postfix with relayguard | $(pfget relayguard) | $(ratio "$(pfget relayguard)" "$(pfget none)") | $(pfget relayguard 3) % |"
echo "| Postfix with relayguard, Ed25519 key | $(pfget relayguard-ed25519) | $(ratio "$(pfget relayguard-ed25519)" "$(pfget none)") | $(pfget relayguard-ed25519 3) % |"
