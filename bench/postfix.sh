# Sourced by bench/compare.sh and bench/before-after.sh: a private Postfix 3.7 on loopback
# (smtp-source -> Postfix -> milter -> smtp-sink) and `postfix_run`, which measures one run
# end to end. Needs $work and $started (PIDs stopped on exit) from the sourcing script, and
# root (Postfix, installed from Debian if missing). Postfix itself is stopped on exit.
command -v smtp-source >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2
# Messages per Postfix run (smtp-source, 8 sessions).
PF_MSGS=${PF_MSGS:-4000}
pf=$work/pf
mkdir -p "$pf/conf" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pf_wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
submit_port=$(free_port); sink_port=$(free_port)
for f in main.cf master.cf; do
    sed -e "s#@DIR@#$pf#g" -e "s#@SUBMIT_PORT@#$submit_port#g" -e "s#@SINK_PORT@#$sink_port#g" "tests/postfix_e2e/$f" > "$pf/conf/$f"
done
grep -v '^smtpd_milters' packaging/postfix/main.cf.snippet >> "$pf/conf/main.cf"
smtp-sink -u postfix "127.0.0.1:$sink_port" 1000 >/dev/null 2>&1 &
started+=("$!")
postfix -c "$pf/conf" start >/dev/null 2>&1
trap 'postfix -c "$pf/conf" stop >/dev/null 2>&1 || true; for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT
pf_wait_port "$submit_port"
# The message: a server's 10 KB status report, as relayguard lets an internal host send it.
{
    printf 'From: Monitoring <monitor@tugraz.at>\nTo: ops@tugraz.at\nSubject: status report\nMessage-ID: <bench@tugraz.at>\nDate: Sat, 28 Nov 2026 10:00:00 +0100\n\n'
    awk 'BEGIN { while (n < 10000) { l = "The quick brown fox jumps over the lazy dog, again and again and again."; print l; n += length(l) + 1 } }'
} > "$work/status.eml"

# CPU seconds (user + system) of a process so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# postfix_run MILTER PID: PF_MSGS messages through Postfix with milter MILTER (a socket in
# Postfix's spelling, or "" for none) served by process PID (or ""), until the queue is
# empty. Prints "messages/s  share-of-both-cores-busy-%  milter-CPU-ms-per-message".
postfix_run() {
    local milter=$1 pid=$2
    postconf -c "$pf/conf" -e "smtpd_milters = $milter"
    postfix -c "$pf/conf" reload >/dev/null 2>&1
    sleep 1
    : > "$pf/maillog"
    local t0 t1 busy0 busy1 cpu0=0 cpu1=0
    [ -n "$pid" ] && cpu0=$(cpu_of "$pid")
    busy0=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    t0=$(date +%s.%N)
    smtp-source -s 8 -d -m "$PF_MSGS" -f monitor@tugraz.at -t ops@tugraz.at -F "$work/status.eml" "127.0.0.1:$submit_port"
    until postqueue -c "$pf/conf" -p 2>/dev/null | grep -q 'Mail queue is empty'; do sleep 0.1; done
    t1=$(date +%s.%N)
    busy1=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    [ -n "$pid" ] && cpu1=$(cpu_of "$pid")
    local sent
    sent=$(grep -c 'status=sent' "$pf/maillog" || true)
    [ "$sent" = "$PF_MSGS" ] || { echo "postfix with milter '$milter': $sent of $PF_MSGS delivered" >&2; grep -m5 -i 'milter\|reject\|defer' "$pf/maillog" >&2; exit 1; }
    echo "$busy0 $busy1" | awk -v n="$PF_MSGS" -v a="$t0" -v b="$t1" -v c0="$cpu0" -v c1="$cpu1" \
        '{printf "%.0f %.0f %.3f\n", n/(b-a), 100*($3-$1)/(($3-$1)+($4-$2)), 1000*(c1-c0)/n}'
}
