#!/usr/bin/env bash
# What ownership from the directory costs: relayguard asking a private slapd (USERS people,
# each owning user<k>@tugraz.at) against the same owners in a sender map; Ed25519 signing
# (cheap, so the lookup shows), 8 connections, every message from a different login in
# turn. Warm: the cache holds every login; runs alternate map, ldap, map, ldap with a fresh
# process each. Cold: a fresh process, every message a login never seen, the directory's
# round trips read from relayguard's own histogram. Prints markdown on standard output.
# Loopback and unix sockets only; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
USERS=${USERS:-10000}
WARM_MSGS=${WARM_MSGS:-2500}   # per connection
COLD_MSGS=$((USERS / 8))       # per connection: each login once

command -v slapd >/dev/null || {
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slapd ldap-utils >&2
}
cargo build --release --locked -q
RG=$PWD/target/release/relayguard
work=$(mktemp -d /tmp/relayguard-ldap-bench.XXXXXX)
started=()
stop_started() { for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_started; rm -rf "$work"' EXIT
fixtures=$PWD/tests/fixtures/ldap
port=$((20000 + RANDOM % 20000))

# The directory: the test campus plus USERS generated people.
mkdir -p "$work/db" "$work/keys"
cat > "$work/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include $fixtures/relayguard.schema
pidfile $work/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 268435456
suffix "dc=tugraz,dc=at"
rootdn "cn=admin,dc=tugraz,dc=at"
rootpw admin-secret
directory $work/db
index objectClass eq
index uid,mail,mailAlternateAddress,employeeType eq
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="cn=milter,ou=services,dc=tugraz,dc=at" read by * none
CONF
{
    cat "$fixtures/directory.ldif"
    for k in $(seq 0 $((USERS - 1))); do
        printf '\ndn: uid=user%d,ou=people,dc=tugraz,dc=at\nobjectClass: inetOrgPerson\nuid: user%d\ncn: User %d\nsn: %d\nmail: user%d@tugraz.at\n' "$k" "$k" "$k" "$k" "$k"
    done
} > "$work/data.ldif"
slapadd -q -f "$work/slapd.conf" -l "$work/data.ldif"
slapd -d 0 -h "ldap://127.0.0.1:$port/" -f "$work/slapd.conf" >/dev/null 2>&1 &
started+=($!)
for _ in $(seq 100); do
    ldapsearch -x -H "ldap://127.0.0.1:$port" -s base -b '' >/dev/null 2>&1 && break
    sleep 0.05
done
cat > "$work/ldap-sender-login.cf" <<CF
server_host = ldap://127.0.0.1:$port
search_base = dc=tugraz,dc=at
query_filter = (&(|(mail=%s)(mailAlternateAddress=%s))(!(employeeType=disabled)))
result_attribute = uid
special_result_attribute = member
bind_dn = cn=milter,ou=services,dc=tugraz,dc=at
bind_pw = milter-secret
version = 3
CF

# The same owners as a sender map, and one Ed25519 key.
for k in $(seq 0 $((USERS - 1))); do echo "user$k@tugraz.at user$k"; done > "$work/sender_login_maps"
printf '[dkim]\nselectors = "selectors.toml"\nkeys_dir = "keys"\n' > "$work/gen.toml"
: > "$work/selectors.toml"
"$RG" keys generate --config "$work/gen.toml" --domain tugraz.at --selector ed --algorithm ed25519 --publish 2026-01-01T00:00:00Z --active-from 2026-01-01T00:00:00Z --print 2>/dev/null | grep -v _domainkey > "$work/selectors.toml"
common="[milter]
socket = \"unix:$work/rg.sock\"
[metrics]
listen = \"127.0.0.1:$((port + 1))\"
[domains]
protected = [\"tugraz.at\"]
[dkim]
selectors = \"selectors.toml\"
keys_dir = \"keys\""
printf '%s\n[senders]\nlogin_map = "sender_login_maps"\nsources = ["map"]\n' "$common" > "$work/map.toml"
printf '%s\n[senders]\nsources = ["ldap"]\n[senders.ldap]\npostfix_table = "ldap-sender-login.cf"\ncache_size = %d\n' "$common" $((USERS * 2)) > "$work/ldap.toml"

wait_socket() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; return 1; }
start_rg() {
    rm -f "$work/rg.sock"
    "$RG" run --config "$work/$1.toml" >/dev/null 2>&1 &
    rg_pid=$!
    started+=("$rg_pid")
    wait_socket "$work/rg.sock"
}
stop_rg() { kill "$rg_pid"; wait "$rg_pid" 2>/dev/null || true; }
bench() { "$RG" bench --target "unix:$work/rg.sock" --size 10000 --login user --from user@tugraz.at --logins "$USERS" "$@"; }

# Warm: one warming run, then the measured one, per process.
declare -A rate cpu
for run in $(seq "$RUNS"); do
    for kind in map ldap; do
        start_rg "$kind"
        bench -n 8 -m "$WARM_MSGS" >/dev/null
        out=$(bench -n 8 -m "$WARM_MSGS" --pid "$rg_pid")
        stop_rg
        grep -q "tempfailed 0" <<<"$out" && grep -q "rejected 0" <<<"$out" || { echo "$out" >&2; exit 1; }
        rate[$kind]+="$(sed -n 's/.*: \([0-9]*\) messages\/s.*/\1/p' <<<"$out") "
        cpu[$kind]+="$(sed -n 's/server: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out") "
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }

# Cold: a fresh process, every message a login it has not seen; CONNECTIONS at once.
cold() {
    local connections=$1
    start_rg ldap
    cold_out=$(bench -n "$connections" -m $((USERS / connections)) --pid "$rg_pid")
    histogram=$(curl -s "http://127.0.0.1:$((port + 1))/metrics" | grep '^relayguard_ldap_lookup_seconds_bucket')
    stop_rg
    count=$(grep 'le="+Inf"' <<<"$histogram" | awk '{print $2}')
}
share() { awk -v n="$count" '{print int($2 * 1000 / n) / 10}' <<<"$(grep "le=\"$1\"" <<<"$histogram")"; }
within() { echo "0.2 ms $(share 0.0002) %, 0.3 ms $(share 0.0003) %, 0.5 ms $(share 0.0005) %, 1 ms $(share 0.001) %, 2 ms $(share 0.002) %, 3 ms $(share 0.003) %, 5 ms $(share 0.005) %"; }

echo "### Ownership from the directory ($USERS logins, Ed25519, 10 KB; $(date -u +%F))"
echo
echo "Warm cache, 8 connections, a fresh process per run, $RUNS runs alternating:"
echo
echo "| | msg/s (median, runs) | server CPU ms/msg (median, runs) |"
echo "|---|---|---|"
for kind in map ldap; do
    echo "| $kind | $(median <<<"${rate[$kind]}") ($(range <<<"${rate[$kind]}")) | $(median <<<"${cpu[$kind]}") ($(range <<<"${cpu[$kind]}")) |"
done
for connections in 1 8; do
    cold "$connections"
    echo
    echo "Cold, $connections connection(s), every message a new login ($count directory round trips):"
    echo "$(head -1 <<<"$cold_out"); $(sed -n 's/^server: //p' <<<"$cold_out")"
    echo "Round trips within $(within)"
done
