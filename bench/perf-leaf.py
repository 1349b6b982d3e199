#!/usr/bin/env python3
"""Usage: python3 bench/perf-leaf.py perf.data <namegate binary> <thread prefix> [--under FRAME] [--top N]
(docs/benchmarks.md, "Profiling")

For the samples of the threads whose name starts with <thread prefix> (tokio-rt, audit-writer,
sqlx-sqlite) in a `perf record --call-graph dwarf` of namegate: the share of samples per leaf frame
(self time) and per frame anywhere on the stack (inclusive). With --under FRAME, only the samples
with a frame containing FRAME (e.g. decode_alertmanager), and its direct callees instead of the
inclusive list. Symbols come from `nm` of the binary, as in bench/perf-stages.py."""
import bisect, re, subprocess, sys
from collections import Counter

args = sys.argv[1:]
under = top = None
if "--under" in args:
    i = args.index("--under"); under = args[i + 1]; del args[i:i + 2]
if "--top" in args:
    i = args.index("--top"); top = int(args[i + 1]); del args[i:i + 2]
data, binary, thread = args[:3]
top = top or 40

nm = subprocess.run(["nm", "-n", "-C", "--defined-only", binary], capture_output=True, text=True).stdout
addrs, names = [], []
for line in nm.splitlines():
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        addrs.append(int(parts[0], 16)); names.append(parts[2])
SHIFT = 0  # perf prints file offsets for a DSO it could not load: vaddr = offset + (p_vaddr - p_offset)
for l in subprocess.run(["readelf", "-l", "-W", binary], capture_output=True, text=True).stdout.splitlines():
    f = l.split()
    if len(f) >= 8 and f[0] == "LOAD" and "E" in "".join(f[6:-1]):
        SHIFT = int(f[2], 16) - int(f[1], 16)
exe = binary.rsplit("/", 1)[-1]


def sym(a):
    i = bisect.bisect_right(addrs, a) - 1
    return names[i] if i >= 0 else "?"


out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,dso"], capture_output=True, text=True).stdout
leaf, incl, callees = Counter(), Counter(), Counter()
n = total = 0
for s in out.split("\n\n"):
    lines = [l for l in s.strip().splitlines() if l.strip()]
    if not lines or not lines[0].strip().startswith(thread):
        continue
    total += 1
    frames = []
    for l in lines[1:]:
        p = l.split()
        try:
            a = int(p[0], 16)
        except (IndexError, ValueError):
            continue
        dso = p[-1]
        name = sym(a + SHIFT) if exe in dso else dso.strip("()").split("/")[-1]
        frames.append(re.sub(r"::h[0-9a-f]{16}$", "", name))
    if not frames:
        continue
    if under:
        hits = [i for i, f in enumerate(frames) if under in f]
        if not hits:
            continue
        i = max(hits)  # the outermost occurrence
        callees[frames[i - 1] if i > 0 else "(self)"] += 1
    n += 1
    leaf[frames[0]] += 1
    for f in set(frames):
        incl[f] += 1
print(f"{n} samples" + (f" under {under}" if under else "") + f" of {total} of threads {thread}*")
print("--- leaf (self)")
for k, v in leaf.most_common(top):
    print(f"{100 * v / max(n, 1):5.1f}% {k[:160]}")
print("--- direct callees" if under else "--- inclusive")
for k, v in (callees if under else incl).most_common(top):
    print(f"{100 * v / max(n, 1):5.1f}% {k[:160]}")
