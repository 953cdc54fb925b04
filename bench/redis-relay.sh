# Sourced by bench/abuse.sh, bench/cluster.sh, bench/profile.sh and bench/before-after.sh: the release build, a work directory, a
# private redis-server on loopback ($port), USERS logins in a sender map and an Ed25519
# selector, all in $work. Every process started lands in $started and is stopped by its PID
# on exit.
cargo build --release --locked -q --bin relayguard
RG=$PWD/target/release/relayguard
work=$(mktemp -d "/tmp/relayguard-$1-bench.XXXXXX")
started=()
trap 'for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null 2>&1 &
started+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

for k in $(seq 0 $((USERS - 1))); do echo "user$k@tugraz.at user$k"; done > "$work/sender_login_maps"
printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n' > "$work/gen.toml"
: > "$work/selectors.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector ed --algorithm ed25519 \
    --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z --print 2>/dev/null \
    | grep -v _domainkey > "$work/selectors.toml"

# packaged_config FILE SELECTORS: a relay on $work/rg.sock with the features on as packaged
# (the audit log sealed with checkpoints and fsync "periodic", [abuse] signals, metrics),
# the sender map, and a server's status mail from 127.0.0.1 allowed (Postfix's load). The
# audit log lives in $work/log, apart from the watched configuration, as packaged: there
# the reload watcher would wake on every record.
packaged_config() {
    [ -f "$work/checkpoint.key" ] || "$RG" audit keygen --config "$work/gen.toml" --out "$work/checkpoint.key" >/dev/null
    mkdir -p "$work/log"
    cat > "$1" <<CONF
[milter]
socket = "unix:$work/rg.sock"
socket_mode = "0666"
[domains]
protected = ["tugraz.at"]
[senders]
login_map = "sender_login_maps"
[clients]
internal_networks = ["127.0.0.0/8"]
require_name = "none"
status_senders = ["monitor@tugraz.at"]
[dkim]
selectors = "$2"
keys_dir = "keys"
[audit]
file = "$work/log/audit.log"
fsync = "periodic"
on_error = "tempfail"
checkpoint_key = "checkpoint.key"
checkpoint_minutes = 60
[metrics]
listen = "127.0.0.1:$((port + 1))"
[abuse]
CONF
}
