#!/usr/bin/env python3
"""Usage: python3 bench/sqlite-pages.py PAGE_SIZE WAL_AUTOCHECKPOINT_PAGES [BATCHES] [DIR]
(docs/benchmarks.md, "The SQLite store's write path")

A standalone exploration, not a measurement of the gateway: Python's own sqlite3 module (its SQLite
is the system's, not the one namegate bundles) appends BATCHES (default 40) batches of 2,048 rows of
the audit store's own schema (gateway/migrations/sqlite) to a fresh database in DIR (default
/tmp/sqlite-pages), the way the SQLite store does: WAL, synchronous = FULL, a 16 MiB page cache,
temporary data in memory, BEGIN IMMEDIATE, one INSERT per 256 rows, ~2.5 KB per row. It prints this
process's CPU time per row (user + system, the Python side included), the CPU time spent in COMMIT
(the WAL write, its sync and any automatic checkpoint), the largest -wal file and the database size."""
import json, os, resource, sys, time, uuid, hashlib
page, ckpt = int(sys.argv[1]), int(sys.argv[2])
batches = int(sys.argv[3]) if len(sys.argv) > 3 else 40
d = sys.argv[4] if len(sys.argv) > 4 else "/tmp/sqlite-pages"
import sqlite3
os.makedirs(d, exist_ok=True)
path = os.path.join(d, "audit.db")
for s in ("", "-wal", "-shm"):
    if os.path.exists(path + s):
        os.remove(path + s)
here = os.path.dirname(os.path.abspath(__file__))
schema = open(os.path.join(here, "..", "gateway", "migrations", "sqlite", "0001_audit_events.sql")).read()
c = sqlite3.connect(path, isolation_level=None)
for p in (f"page_size={page}", "journal_mode=wal", "synchronous=FULL", "cache_size=-16384",
          "temp_store=memory", f"wal_autocheckpoint={ckpt}"):
    c.execute("PRAGMA " + p)
c.executescript(schema)
cols = ("event_id, event_version, event_timestamp, event_type, event_category, event_action, "
        "event_outcome, actor_type, actor_id, resource_type, resource_id, correlation_id, "
        "parent_event_id, trace_id, span_id, namespace, cluster_id, fingerprint, event_data, severity, "
        "duration_ms, error_code, error_message, event_hash, previous_event_hash, hash_algorithm")
sql = f"INSERT INTO audit_events ({cols}) VALUES " + ",".join(["(" + ",".join("?" * 26) + ")"] * 256)
data = json.dumps({"original_payload": {"labels": {f"k{i}": "v" * 20 for i in range(20)},
                                        "annotations": {"summary": "x" * 300}},
                   "fingerprint": "f" * 64}, sort_keys=True, separators=(",", ":"))
corr = [f"rr-{i:08x}" for i in range(200)]
def row(i):
    h = hashlib.sha256(str(i).encode()).hexdigest()
    ts = f"2026-11-30T05:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000000:06d}Z"
    return [str(uuid.uuid4()), "1.0", ts, "gateway.signal.deduplicated", "gateway", "deduplicated",
            "success", "external", "prometheus", "Signal", "f" * 64, corr[i % 200], None, "0" * 32,
            "0" * 16, "default", None, "f" * 64, data, "warning", None, None, None, h, h, "sha256"]
args, n = [], 0
for _ in range(batches):
    b = []
    for _ in range(8):
        a = []
        for _ in range(256):
            a += row(n); n += 1
        b.append(a)
    args.append(b)
r0, w0, commit, largest = resource.getrusage(resource.RUSAGE_SELF), time.time(), 0.0, 0
for b in args:
    c.execute("BEGIN IMMEDIATE")
    for a in b:
        c.execute(sql, a)
    t = time.process_time(); c.execute("COMMIT"); commit += time.process_time() - t
    largest = max(largest, os.path.getsize(path + "-wal"))
r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.time()
rows = batches * 2048
cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / rows * 1e6
print(f"page_size={page} wal_autocheckpoint={ckpt} rows={rows} cpu={cpu:.1f} us/row "
      f"commit={commit / rows * 1e6:.1f} us/row wall={(w1 - w0) / rows * 1e6:.1f} us/row "
      f"largest_wal={largest / 2**20:.1f} MiB db={os.path.getsize(path) / 2**20:.0f} MiB (SQLite {sqlite3.sqlite_version})")
c.close()
for s in ("", "-wal", "-shm"):
    if os.path.exists(path + s):
        os.remove(path + s)
