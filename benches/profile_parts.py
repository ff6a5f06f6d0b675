#!/usr/bin/env python3
"""Where a process's CPU went, from folded stacks (inferno-collapse-perf --all).

Each sample is charged to the part its innermost frame belongs to: kernel
time by the system call it ran under (or interrupts and scheduling), user
time by crate (tether by module), glibc's allocator and memory copies on
their own. Prints a table of parts and the top leaf functions.

    benches/profile_parts.py target/profile/overhead.folded
"""

import re
import sys
from collections import Counter

ALLOC = re.compile(
    r"^(malloc|_int_malloc|_int_free|_int_realloc|cfree(@.*)?|free|realloc|calloc|"
    r"malloc_consolidate|unlink_chunk.*|sysmalloc|tcache_.*|checked_request2size|"
    r"(__GI_)?__libc_(malloc|free|calloc|realloc))$"
)
MEMORY = re.compile(r"^__(mem|str)\w*|^(memcpy|memmove|memset|memcmp|memchr|strlen)$")
SYSCALL = re.compile(r"__(?:x64|ia32)_sys_(\w+?)_\[k\]")
# Crates and tether modules, most specific first; the earliest one named in
# a symbol wins (`<&mut serde_json::Serializer as serde::Serializer>` is
# serde_json), and of two named at the same place the first listed.
PARTS = [
    ("tether::session", "tether: session (fingerprint, store)"),
    ("tether::translate", "tether: translate"),
    ("tether::proxy", "tether: proxy (turn, plan, fallback)"),
    ("tether::upstream", "tether: upstream (socket, pool)"),
    ("tether::http", "tether: http (server, routes, body)"),
    ("tether::", "tether: other"),
    ("serde_json", "serde_json"),
    ("tungstenite", "tungstenite"),
    ("httparse", "hyper (and httparse, http)"),
    ("hyper_util", "hyper (and httparse, http)"),
    ("hyper", "hyper (and httparse, http)"),
    ("http::", "hyper (and httparse, http)"),
    ("tokio", "tokio (and mio)"),
    ("mio", "tokio (and mio)"),
    ("futures", "futures"),
    ("bytes", "bytes"),
    ("xxhash_rust", "xxhash"),
    ("tracing", "tracing"),
    ("lru", "lru"),
    ("hashbrown", "hashbrown, memchr"),
    ("memchr", "hashbrown, memchr"),
    ("core::", "std (core, alloc)"),
    ("alloc::", "std (core, alloc)"),
    ("std::", "std (core, alloc)"),
]


def part(frames):
    """The part a sample (its frames, outermost first) is charged to."""
    leaf = frames[-1]
    if leaf.endswith("_[k]"):
        for frame in reversed(frames):
            m = SYSCALL.search(frame)
            if m:
                return "kernel: " + m.group(1)
        return "kernel: interrupts, scheduling"
    if ALLOC.match(leaf):
        return "glibc malloc/free"
    if MEMORY.match(leaf):
        return "memory copies (memcpy, memmove, ...)"
    # The earliest named; at the same place, the first listed (the more specific).
    found = [(leaf.find(key), i) for i, (key, _) in enumerate(PARTS) if key in leaf]
    if found:
        return PARTS[min(found)[1]][1]
    return "other (libc, unresolved)"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    parts, leaves, total = Counter(), Counter(), 0
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            parts[part(frames)] += n
            leaves[frames[-1]] += n
            total += n
    if total == 0:
        sys.exit("profile_parts: no samples in " + sys.argv[1])
    kernel = sum(n for p, n in parts.items() if p.startswith("kernel"))
    # Counts are sample weights (perf's period: ns of CPU for cpu-clock), so
    # only shares are printed.
    print(f"kernel {100 * kernel / total:.1f}%, user {100 * (total - kernel) / total:.1f}%")
    print()
    print(f"{'part':<44} {'share':>7}")
    for p, n in parts.most_common():
        print(f"{p:<44} {100 * n / total:>6.1f}%")
    print()
    print("top functions (self time)")
    for leaf, n in leaves.most_common(20):
        print(f"{100 * n / total:>6.1f}%  {leaf[:110]}")


if __name__ == "__main__":
    main()
