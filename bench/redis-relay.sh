# Sourced by bench/abuse.sh and bench/cluster.sh: the release build, a work directory, a
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
