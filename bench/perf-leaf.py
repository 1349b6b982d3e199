#!/usr/bin/env python3
"""Usage: python3 bench/perf-leaf.py perf.data <namegate binary> <thread prefix> [--under FRAME] [--top N]
(docs/benchmarks.md, "Profiling")

For the samples of the threads whose name starts with <thread prefix> (tokio-rt, audit-writer,
sqlx-sqlite) in a `perf record --call-graph dwarf` of namegate: the share of samples per leaf frame
(self time) and per frame anywhere on the stack (inclusive). With --under FRAME, only the samples
with a frame containing FRAME (e.g. decode_alertmanager), and its direct callees instead of the
inclusive list. Symbols come from `nm` of the binary (bench/perfsamples.py)."""
import sys
from collections import Counter
from perfsamples import samples

args = sys.argv[1:]
under = top = None
if "--under" in args:
    i = args.index("--under"); under = args[i + 1]; del args[i:i + 2]
if "--top" in args:
    i = args.index("--top"); top = int(args[i + 1]); del args[i:i + 2]
data, binary, thread = args[:3]
top = top or 40

leaf, incl, callees = Counter(), Counter(), Counter()
n = total = 0
for comm, frames in samples(data, binary):
    if not comm.startswith(thread):
        continue
    total += 1
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
