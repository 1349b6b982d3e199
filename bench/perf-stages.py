#!/usr/bin/env python3
"""Usage: python3 bench/perf-stages.py perf.data target/release/namegate [--by-thread] [--inclusive THREAD]
(docs/benchmarks.md)

Per-stage CPU of a `perf record --call-graph dwarf` of namegate: each sample goes to the innermost
frame that names a stage (namegate's own functions), else to the thread's framework (hyper / tokio).
--inclusive THREAD: for the samples of threads named THREAD (e.g. audit-writer), the share in which
each of a few writer activities is anywhere on the stack (inclusive; they overlap)."""
import re, sys
from collections import Counter
from perfsamples import samples
data, binary = sys.argv[1], sys.argv[2]
STAGES = [  # (stage, regex on the demangled frame)
    ("chain hash (SHA-256)", r"ChainHasher::hash|sha2::|chain::sha256|chain::hmac"),
    ("audit serialise (row, canonical JSON)", r"chain::canonical|canonical_json|chain::write_|RawEventRow::from_event|Spill::encode|format_timestamp"),
    ("store: SQLite (sqlx, statements)", r"audit::store::sqlite|sqlx_sqlite|libsqlite3|sqlite3"),
    ("store: PostgreSQL (sqlx, wire)", r"audit::store::postgres|sqlx_postgres"),
    ("store: common (append_batch, pool, checkpoints)", r"audit::store::|sqlx_core|checkpoint::"),
    ("audit writer loop (collect, byte accounting)", r"audit::writer::Writer|audit::writer::AuditWriter"),
    ("audit queue (reserve, send, approx_bytes)", r"AuditSink::|Permits::|AuditEvent::approx_bytes|tokio::sync::mpsc"),
    ("audit event build (payload)", r"audit::payload::|audit::event_data::|AuditEvent::new"),
    ("JSON decode (adapter)", r"adapters::|decode_alertmanager"),
    ("fingerprint", r"[Ff]ingerprint"),
    ("index lookup", r"index::RrIndex|index::Entry"),
    ("occurrence record / flush", r"occurrence::"),
    ("admission (other)", r"namegate::admission::"),
    ("resolve / auth caches", r"resolve::|http::auth|moka::"),
    ("pipeline (other: decide/commit)", r"namegate::pipeline::"),
    ("answer (body JSON, problem)", r"ingest::answer_single|http::problem|axum::json|axum::Json"),
    ("HTTP handler + middleware (ingest, request id, span, limits)", r"namegate::http::|tower_http::|tower::"),
    ("metrics", r"prometheus_client::"),
    ("tracing", r"tracing_core::|tracing_subscriber::|tracing::"),
    ("HTTP framework (hyper/axum, socket I/O)", r"hyper::|hyper_util::|axum::"),
    ("tokio runtime (scheduling, timers, wakeups)", r"tokio::"),
]
STAGES = [(n, re.compile(p)) for n, p in STAGES]
by_stage, by_thread, thread_stage = Counter(), Counter(), Counter()
stacks = []
total = 0
for comm, frames in samples(data, binary):
    total += 1
    by_thread[comm] += 1
    stacks.append((comm, frames))
    stage = None
    for f in frames:  # leaf first: the innermost named stage wins
        for n, r in STAGES:
            if r.search(f):
                stage = n; break
        if stage: break
    if stage is None:
        if comm.startswith("sqlx-sqlite"): stage = "store: SQLite (sqlx, statements)"
        else: stage = "other (kernel/libc outside a named frame: idle wakeups, allocator, unwinding gaps)"
    by_stage[stage] += 1
    thread_stage[(comm, stage)] += 1
print(f"samples: {total}")
for t, c in by_thread.most_common(): print(f"thread {t}: {100*c/total:.1f} %")
for n, c in by_stage.most_common(): print(f"| {n} | {100*c/total:.1f} % |")
if "--by-thread" in sys.argv[3:]:  # each thread's stages, as % of all samples
    for t, _ in by_thread.most_common():
        for (tt, n), c in thread_stage.most_common():
            if tt == t and 100 * c / total >= 0.3: print(f"| {t} | {n} | {100*c/total:.1f} % |")
INCLUSIVE = [  # (activity, regex on any frame of the stack)
    ("building rows (RawEventRow::from_event)", r"RawEventRow::from_event"),
    ("canonical JSON of event_data (canonical_json)", r"chain::canonical_json|chain::write_value"),
    ("canonical form of the row (chain::canonical)", r"chain::canonical$|chain::canonical\b(?!_)"),
    ("chain hash (SHA-256)", r"sha2::|ChainHasher::hash"),
    ("dropping events (drop_in_place of AuditEvent / Value / Vec<AuditEvent>)", r"drop_in_place<.*(AuditEvent|serde_json::value::Value|EventData)"),
    ("binding arguments (sqlx Arguments / Encode / bind)", r"Arguments.*::add|Encode.*::encode|Query.*::bind|query::Query.*bind"),
    ("approx_bytes", r"approx_bytes"),
    ("SQLite statements on this thread (sqlx_sqlite)", r"sqlx_sqlite|audit::store::sqlite"),
    ("PostgreSQL wire on this thread (sqlx_postgres)", r"sqlx_postgres|audit::store::postgres"),
    ("libc (malloc/free, memcpy; any frame)", r"^libc|libc\.so"),
]
if "--inclusive" in sys.argv[3:]:
    want = sys.argv[sys.argv.index("--inclusive") + 1]
    mine = [f for c, f in stacks if c.startswith(want)]
    print(f"inclusive, thread {want}: {len(mine)} samples ({100*len(mine)/max(total,1):.1f} % of all)")
    for n, p in INCLUSIVE:
        r = re.compile(p)
        c = sum(1 for f in mine if any(r.search(x) for x in f))
        print(f"| {n} | {100*c/max(len(mine),1):.1f} % |")
