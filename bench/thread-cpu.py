#!/usr/bin/env python3
"""Usage: python3 bench/thread-cpu.py <pid> <seconds>   (docs/benchmarks.md, "Profiling")

Cores busy per thread name of process <pid> over <seconds>, from /proc/<pid>/task/*/stat (user +
system ticks): e.g. tokio-rt-worker (the request path), audit-writer, sqlx-sqlite-worker. Divide by
the events or answers per second of the same window to get CPU per event or per answer."""
import collections, os, sys, time

pid, secs = sys.argv[1], float(sys.argv[2])


def snap():
    d = collections.Counter()
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            st = open(f"/proc/{pid}/task/{t}/stat").read()
            f = st[st.rindex(")") + 2:].split()
            d[comm] += int(f[11]) + int(f[12])
        except OSError:
            pass  # a thread that ended between the listing and the read
    return d


a = snap(); t0 = time.time(); time.sleep(secs); b = snap(); dt = time.time() - t0
hz = os.sysconf("SC_CLK_TCK")
print(f"window {dt:.2f} s; cores busy per thread name:")
for k in sorted(set(a) | set(b)):
    print(f"  {k}: {(b[k] - a[k]) / hz / dt:.3f}")
