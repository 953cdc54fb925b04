#!/usr/bin/env bash
# Before and after, side by side in one run: builds the release REV (default: the last
# commit before the performance work of issue 27) from git into target/before/, and measures
# it and the working tree's release build in turn (A B A B, a fresh process per run, medians
# of RUNS) with the features on as packaged: the audit log sealed with checkpoints and fsync
# "periodic", [abuse] signals, metrics, logging to a file, 1,000 logins in a sender map.
# The load is `relayguard bench` (the working tree's, for both: it talks as Postfix 3.7
# does); then a real Postfix (bench/postfix.sh) with no milter, before and after. Prints
# markdown tables. Needs root (Postfix from Debian). Loopback and unix sockets only; every
# process started here is stopped by its PID. For a quick look while working,
# LOADS="ed-10k rest" measures only those loads and POSTFIX=0 skips Postfix; the tables in
# BENCHMARKS.md come from full runs.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${REV:-0b4e858}
RUNS=${RUNS:-3}
MSGS_ED=${MSGS_ED:-2000}
MSGS_RSA=${MSGS_RSA:-300}
MSGS_1M=${MSGS_1M:-20}
USERS=1000
source bench/redis-relay.sh before-after
chmod 755 "$work"
AFTER=$RG
before_src=$PWD/target/before/$REV
if [ ! -x "$before_src/target/release/relayguard" ]; then
    echo "building $REV (once, into $before_src) ..." >&2
    rm -rf "$before_src"
    mkdir -p "$before_src"
    git archive "$REV" | tar -x -C "$before_src"
    (cd "$before_src" && cargo build --release --locked -q --bin relayguard)
fi
BEFORE=$before_src/target/release/relayguard

mv "$work/selectors.toml" "$work/selectors-ed.toml"
: > "$work/selectors.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector rsa --algorithm rsa-2048 \
    --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z --print 2>/dev/null \
    | grep -v _domainkey > "$work/selectors-rsa.toml"
for kind in ed rsa; do packaged_config "$work/relay-$kind.toml" "selectors-$kind.toml"; done

wait_socket() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; return 1; }
start_relay() {  # start_relay BINARY KIND -> sets $relay
    rm -f "$work/rg.sock"
    "$1" run --config "$work/relay-$2.toml" >>"$work/log/relay.log" 2>&1 &
    relay=$!
    started+=("$relay")
    wait_socket "$work/rg.sock"
}
stop_relay() { kill "$relay"; wait "$relay" 2>/dev/null || true; }
load() {  # load ARGS... -> the bench's output, against $relay
    "$AFTER" bench --target "unix:$work/rg.sock" --pid "$relay" "$@"
}
field() { sed -n "$1" <<<"$2"; }
# once BUILD LOAD: one fresh process, one line "BUILD LOAD msgs/s cpu-ms rss-MiB" in $runs.
once() {
    local build=$1 name=$2 bin out total rate cpu rss
    case $build in before) bin=$BEFORE ;; after) bin=$AFTER ;; esac
    case $name in
        ed-10k) start_relay "$bin" ed; out=$(load -n 8 -m "$MSGS_ED" --size 10000 --login user --from user@tugraz.at --logins "$USERS") ;;
        rsa-10k) start_relay "$bin" rsa; out=$(load -n 8 -m "$MSGS_RSA" --size 10000 --login user --from user@tugraz.at --logins "$USERS") ;;
        rsa-1m) start_relay "$bin" rsa; out=$(load -n 8 -m "$MSGS_1M" --size 1000000 --login user --from user@tugraz.at --logins "$USERS") ;;
        100x10mb) start_relay "$bin" rsa; out=$(load -n 100 -m 1 --size 10000000 --login user --from user@tugraz.at --logins "$USERS") ;;
        # The same message as Postfix's load below, from the bench.
        status-rsa) start_relay "$bin" rsa; out=$(load -n 8 -m "$MSGS_RSA" --size 10000 --login "" --from monitor@tugraz.at --client 127.0.0.1 --rcpt-domain tugraz.at) ;;
        status-ed) start_relay "$bin" ed; out=$(load -n 8 -m "$MSGS_ED" --size 10000 --login "" --from monitor@tugraz.at --client 127.0.0.1 --rcpt-domain tugraz.at) ;;
        rest)
            # Resident memory at rest: after ten messages (the code they need is paged in).
            start_relay "$bin" ed
            load -n 1 -m 10 --size 10000 --login user --from user@tugraz.at >/dev/null
            sleep 1
            echo "$build $name 0 0 $(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$relay/status")" >> "$runs"
            stop_relay
            return ;;
    esac
    stop_relay
    total=$(field 's/^\([0-9]*\) messages of.*/\1/p' "$out")
    grep -q "signed $total, accepted unsigned 0, rejected 0, tempfailed 0" <<<"$out" || { echo "$build $name: not every message was signed: $out" >&2; exit 1; }
    rate=$(field 's/.*s: \([0-9]*\) messages\/s.*/\1/p' "$out")
    cpu=$(field 's/server: \([0-9.]*\) ms CPU.*/\1/p' "$out")
    rss=$(field 's/.*peak RSS \([0-9.]*\) MiB.*/\1/p' "$out")
    echo "$build $name $rate $cpu $rss" >> "$runs"
}
runs=$work/runs
: > "$runs"
read -ra loads <<<"${LOADS:-ed-10k rsa-10k rsa-1m 100x10mb rest status-rsa status-ed}"
# The bare signature: ring on one thread with nothing else to do, once per run (this VM's
# speed drifts: one measurement would make every ratio to it drift too).
sig_ms() { "$AFTER" bench --ceiling "$work/keys/$1" --threads 1 --seconds 3 | sed -n 's/.*threads, \([0-9.]*\) ms CPU per signature.*/\1/p'; }
for r in $(seq "$RUNS"); do
    echo "run $r of $RUNS ..." >&2
    for name in "${loads[@]}"; do
        once before "$name"
        once after "$name"
    done
    echo "sig rsa 0 $(sig_ms tugraz.at.rsa.pem) 0" >> "$runs"
    echo "sig ed 0 $(sig_ms tugraz.at.ed.pem) 0" >> "$runs"
done

# Through a real Postfix: no milter, before and after, RSA and Ed25519, in turn.
source bench/postfix.sh
pf() {  # pf BUILD KIND -> "msgs/s busy-% milter-ms"
    local bin
    case $1 in none) postfix_run "" ""; return ;; before) bin=$BEFORE ;; after) bin=$AFTER ;; esac
    start_relay "$bin" "$2"
    postfix_run "unix:$work/rg.sock" "$relay"
    stop_relay
}
: > "$work/pf-runs"
for r in $(seq "$RUNS"); do
    [ "${POSTFIX:-1}" = 1 ] || break
    echo "Postfix run $r of $RUNS ..." >&2
    echo "none - $(pf none)" >> "$work/pf-runs"
    for kind in rsa ed; do
        for build in before after; do
            echo "$build $kind $(pf "$build" "$kind")" >> "$work/pf-runs"
        done
    done
done

med() { awk -v b="$2" -v k="$3" -v f="$4" '$1==b && $2==k {print $f}' "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
get() { med "$runs" "$1" "$2" "$3"; }
pfget() { med "$work/pf-runs" "$1" "$2" "$3"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
change() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.0f %%", 100*(b-a)/a}'; }
row() {  # row LABEL LOAD
    echo "| $1 | $(get before "$2" 3), $(get before "$2" 4) | $(get after "$2" 3), $(get after "$2" 4) | $(change "$(get before "$2" 4)" "$(get after "$2" 4)") |"
}
echo "Before: $REV ($(git log -1 --format=%s "$REV" | cut -c1-60)); after: $(git describe --always --dirty). $RUNS runs each, medians."
echo
echo "| load (8 connections) | before: msgs/s, CPU ms/msg | after: msgs/s, CPU ms/msg | CPU change |"
echo "|---|---|---|---|"
row "Ed25519 10 KB" ed-10k
row "RSA-2048 10 KB" rsa-10k
row "RSA-2048 1 MB" rsa-1m
row "Ed25519 10 KB, a server's status mail" status-ed
row "RSA-2048 10 KB, a server's status mail" status-rsa
echo
echo "| memory | before | after |"
echo "|---|---|---|"
echo "| RSS at rest (after 10 messages), MiB | $(get before rest 5) | $(get after rest 5) |"
echo "| peak RSS, 100 x 10 MB in flight, MiB | $(get before 100x10mb 5) | $(get after 100x10mb 5) |"
echo
rsa_sig=$(get sig rsa 4)
ed_sig=$(get sig ed 4)
echo "| the bare signature (ring, one thread; median of one per run) | ms | RSA-2048 10 KB message / signature, before | after |"
echo "|---|---|---|---|"
echo "| RSA-2048 | $rsa_sig | $(ratio "$(get before rsa-10k 4)" "$rsa_sig") | $(ratio "$(get after rsa-10k 4)" "$rsa_sig") |"
echo "| Ed25519 | $ed_sig | | |"
echo
# All CPU per message (both cores, every process) from the run's rate and busy share.
all_cpu() { awk -v r="$1" -v b="$2" 'BEGIN {printf "%.2f", 2000 * b / 100 / r}'; }
echo "| through Postfix (smtp-source, 8 sessions, 10 KB, until delivered) | msgs/s | share of Postfix alone | both cores busy | all CPU ms/msg | milter CPU ms/msg | the same message from the bench | Postfix / bench |"
echo "|---|---|---|---|---|---|---|---|"
echo "| Postfix alone | $(pfget none - 3) | 1.00 | $(pfget none - 4) % | $(all_cpu "$(pfget none - 3)" "$(pfget none - 4)") | | | |"
for kind in rsa ed; do
    for build in before after; do
        echo "| $build, $kind | $(pfget "$build" "$kind" 3) | $(ratio "$(pfget "$build" "$kind" 3)" "$(pfget none - 3)") | $(pfget "$build" "$kind" 4) % | $(all_cpu "$(pfget "$build" "$kind" 3)" "$(pfget "$build" "$kind" 4)") | $(pfget "$build" "$kind" 5) | $(get "$build" "status-$kind" 4) | $(ratio "$(pfget "$build" "$kind" 5)" "$(get "$build" "status-$kind" 4)") |"
    done
done
