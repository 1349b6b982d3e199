#!/usr/bin/env python3
"""Usage: python3 bench/sched-waits.py <perf sched data> <gateway pid>   (docs/benchmarks.md, "Profiling")

Where the request workers' time off the CPU goes, from a `perf sched record -a` trace (e.g. of §4's
window: `bench/profile-run <label> <binary> sched`). Reads `perf sched timehist --state -n` and prints
  1. cores busy per task group in the window (the gateway's threads by name, other engineers' compiles
     as `builds`, everything else by command name);
  2. per gateway thread: how long it waited for a CPU once woken (scheduling delay) and how long it
     ran at a time;
  3. each time a request worker (`tokio-rt-worker` of the gateway) was preempted: by which task, and
     how long until it ran again;
  4. in the request workers' waits for a CPU longer than 1 ms: the CPU time each task group had
     in them (both cores), i.e. who had the cores while a request worker waited.
"""
import bisect
import collections
import re
import subprocess
import sys

data, gpid = sys.argv[1], sys.argv[2]
LINE = re.compile(
    r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
    r"\s+(\S+)\s+next: (.+?)\[(\d+)"
)
text = subprocess.run(
    ["perf", "sched", "timehist", "-i", data, "--state", "-n"],
    capture_output=True, text=True, check=True,
).stdout
# (end time s, cpu, name, tid, pid, wait ms, sched delay ms, run ms, state at switch-out, next name, next tid)
rows = []
for line in text.splitlines():
    m = LINE.match(line)
    if m:
        t, cpu, name, tid, pid, w, s, r, st, nxt, ntid = m.groups()
        rows.append((float(t), int(cpu), name.strip(), tid, pid or tid, float(w), float(s), float(r), st,
                     nxt.strip(), ntid))
if not rows:
    sys.exit("no scheduling events in " + data)
gw_threads = {tid: name for _, _, name, tid, pid, *_ in rows if pid == gpid}


def group(name, tid):
    if tid in gw_threads:
        return "gateway " + gw_threads[tid]
    if name.startswith(("cpy ", "opt ", "rustc", "cc1", "ld", "cargo", "build-script")):
        return "builds"
    if name.startswith("<idle>"):
        return "idle"
    return name[:20]


def dist(v):
    v = sorted(v)
    n = len(v)
    return f"n {n:6d}  p50 {v[n // 2]:.3f}  p99 {v[int(n * .99)]:.3f}  max {v[-1]:.3f}"


span = rows[-1][0] - rows[0][0]
print(f"window {span:.2f} s, {len(rows)} context switches")

print("\n1. cores busy by task group")
busy = collections.Counter()
for _, _, name, tid, _, _, _, r, *_ in rows:
    busy[group(name, tid)] += r
for k, v in busy.most_common(12):
    print(f"  {k:32s} {v / 1000 / span:.3f}")

print("\n2. gateway threads: scheduling delay once woken / length of a run (ms)")
delay, run = collections.defaultdict(list), collections.defaultdict(list)
for _, _, name, tid, pid, _, s, r, *_ in rows:
    if pid == gpid:
        delay[name].append(s)
        run[name].append(r)
for k in sorted(delay):
    print(f"  {k:20s} delay {dist(delay[k])}")
    print(f"  {'':20s} run   {dist(run[k])}")

print("\n3. request workers preempted, by the task that took the CPU: time until they ran again (ms)")
pending, waits = {}, collections.defaultdict(list)
for _, _, name, tid, pid, w, _, _, st, nxt, ntid in rows:
    if pid != gpid or name != "tokio-rt-worker":
        continue
    if tid in pending:
        waits[pending.pop(tid)].append(w)
    if st == "R":
        pending[tid] = group(nxt, ntid)
for k, v in sorted(waits.items(), key=lambda kv: -sum(kv[1]))[:10]:
    print(f"  {k:32s} {dist(v)}  total {sum(v):.0f}")

print("\n4. request-worker waits for a CPU > 1 ms: CPU time of each task group inside them (ms, both cores)")
spans = sorted((t - r / 1000, t, group(name, tid)) for t, _, name, tid, _, _, _, r, *_ in rows)
starts = [a for a, _, _ in spans]
inside, n, total = collections.Counter(), 0, 0.0
for t, _, name, tid, pid, _, s, r, *_ in rows:
    if pid != gpid or name != "tokio-rt-worker" or s <= 1.0:
        continue
    b = t - r / 1000
    a = b - s / 1000
    n += 1
    total += s
    for x0, x1, g in spans[bisect.bisect_left(starts, a - 0.5):]:
        if x0 > b:
            break
        overlap = min(b, x1) - max(a, x0)
        if overlap > 0:
            inside[g] += overlap * 1000
print(f"  {n} waits, {total:.0f} ms in all")
for k, v in inside.most_common(10):
    print(f"  {k:32s} {v:8.1f}")
