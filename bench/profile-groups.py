"""Groups `perf report --sort sym` self-time lines into the parts of the message path.

Reads perf's report on stdin; argv[1] is the CPU per message (ms) to share out. The first
pattern a symbol matches names its part; the order matters (specific before general).
"""
import re
import sys

GROUPS = [
    ("hashing: SHA-256 (ring)", r"sha256|sha2|ring::digest|block_data_order"),
    ("signing: Ed25519/RSA arithmetic (ring)", r"ring_core|ring::ec|ring::rsa|x25519|ed25519|fiat|bn_mul|GFp|limbs_|mont|\bfe_|\bfe4_|\bge_|x25519_|sc_"),
    ("body and header canonicalization", r"relayguard::dkim::(body|header|canon)"),
    ("DKIM signature assembly", r"relayguard::dkim|mail_auth"),
    ("audit record, seal, write", r"relayguard::audit"),
    ("stolen-account signals", r"relayguard::abuse"),
    ("limits and locks", r"relayguard::limits"),
    ("policy: From/Sender, ownership", r"relayguard::policy|mail_parser"),
    ("session pipeline and checks", r"relayguard::session|relayguard::checks"),
    ("metrics", r"relayguard::metrics|prometheus"),
    ("logging", r"tracing|relayguard::log|core::fmt"),
    ("milter protocol (indymilter)", r"indymilter|relayguard::milter"),
    ("JSON (serde_json)", r"serde_json|serde::"),
    ("kernel: wake-ups and scheduling", r"\[k\].*(futex|schedule|wake|switch|enqueue|dequeue|update_curr|pick_next|update_load|finish_task|select_task|ttwu|idle|hrtimer|native_sched|psi_|cpuacct|reweight|set_next|put_prev)"),
    ("kernel: socket I/O", r"\[k\].*(unix_|sock|skb|copy_|_copy|recv|send|kmem|kfree|kmalloc|__alloc|memcg|slab|page_|fault|iov|clear_user|_user)"),
    ("kernel: syscall entry, epoll, other", r"\[k\]"),
    ("memory (malloc, free, memcpy, memmove)", r"malloc|free|realloc|memcpy|memmove|memset|memcmp|_int_|alloc::|cfree|tcache"),
    ("async runtime (tokio), clock, hashing of maps", r"tokio|parking|mio::|epoll|clock_gettime|poll_fn|hashbrown|BuildHasher|std::sync|std::thread"),
]

def main():
    per_msg = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None
    totals = {name: 0.0 for name, _ in GROUPS}
    other = {}
    kernel_other = {}
    for line in sys.stdin:
        m = re.match(r"\s*([0-9.]+)%\s+(\[[k.]\])\s+(.*)$", line)
        if not m:
            continue
        share, kind, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        text = f"{kind} {sym}"
        for name, pattern in GROUPS:
            if re.search(pattern, text):
                totals[name] += share
                if name.startswith("kernel: syscall"):
                    kernel_other[sym] = kernel_other.get(sym, 0.0) + share
                break
        else:
            other[sym] = other.get(sym, 0.0) + share
    rest = sum(other.values())
    print("| part of the message path | share of CPU | µs per message |")
    print("|---|---|---|")
    rows = sorted(totals.items(), key=lambda kv: -kv[1]) + [("everything else", rest)]
    for name, share in rows:
        us = f"{share / 100 * per_msg * 1000:.1f}" if per_msg else "-"
        print(f"| {name} | {share:.1f} % | {us} |")
    print()
    print("Largest of the kernel's other:", ", ".join(
        f"{s[:40]} {v:.1f} %" for s, v in sorted(kernel_other.items(), key=lambda kv: -kv[1])[:8]))
    print()
    print("Largest of everything else:", ", ".join(
        f"{s[:60]} {v:.1f} %" for s, v in sorted(other.items(), key=lambda kv: -kv[1])[:8]))

main()
