//! The audit writer (docs/audit.md): off the request's critical path, bounded, batched, never silently
//! dropping.
//!
//! The request path holds an [`AuditSink`]. It reserves queue slots *before* acting
//! ([`AuditSink::try_reserve`], non-blocking): when the bounded queue is full the reservation fails with
//! [`AuditError::Backpressure`] and the HTTP layer answers 503 + `Retry-After` instead of admitting a
//! signal it could not audit. A reserved slot is then filled with [`Permits::send_one`]/[`Permits::send`]
//! (which cannot fail for lack of room).
//!
//! One writer task drains the queue into batches (`batch_size` events or `batch_interval`, whichever
//! comes first) and appends them to the store, retrying with jittered exponential backoff. When the
//! store stays unreachable it appends the batch to the spill file (fsynced) and keeps draining the
//! queue into the spill; it probes the store with backoff and, once it answers, replays the spill in
//! order — before any newer event — and empties it. The spill survives restarts (replayed first). When
//! the spill budget is used up the writer stops draining: the queue fills and ingestion gets 503s.
//!
//! What is durable when: an event is in memory once `send` returns; durable once the store commits it
//! or the spill append is fsynced. A crash (SIGKILL, OOM) loses what is in the queue — at most
//! `queue_capacity` events plus one batch. A graceful [`WriterHandle::shutdown`] writes everything to the
//! store or the spill first.

mod batch;
mod spill;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::{self, PermitIterator, error::TrySendError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::event::AuditEvent;
use super::store::{AuditStore, StoreConfig, StoreError};
use batch::BatchReady;
use spill::Spill;

/// Writer settings. `Default` uses `./audit-spill.jsonl`; the gateway passes a path in its data
/// directory ([`WriterConfig::in_data_dir`]).
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Bounded queue between the request path and the writer (events).
    pub queue_capacity: usize,
    /// The queue is also bounded in bytes ([`AuditEvent::approx_bytes`]): once the queued events hold
    /// this much, reservations fail (→ 503) until the writer catches up, whatever their count.
    pub queue_budget_bytes: u64,
    /// Flush when this many events are waiting…
    pub batch_size: usize,
    /// …or when the oldest waiting event has waited this long.
    pub batch_interval: Duration,
    /// The append-only spill file used while the store is unreachable.
    pub spill_path: PathBuf,
    /// Once the spill holds this many bytes, the writer stops draining the queue (→ 503 upstream).
    pub spill_budget_bytes: u64,
    /// The rejected-event file never grows past this: an event refused by the store that does not fit
    /// is logged whole at error and counted as dropped instead.
    pub rejected_budget_bytes: u64,
    /// First retry delay; doubles (with jitter) up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest delay between store attempts (also the longest `Retry-After` hint).
    pub retry_max: Duration,
    /// How long a batch is retried against the store before it goes to the spill.
    pub spill_after: Duration,
    /// Bound on one append attempt (a hung connection counts as unavailable).
    pub insert_timeout: Duration,
    /// Bound on one probe of a store that was unreachable.
    pub probe_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            queue_budget_bytes: 32 * 1024 * 1024,
            // Large enough that a deep queue drains in few transactions: the writer is bound by the
            // round trips per batch, not by the rows (docs/benchmarks.md, "The duplicate path…").
            batch_size: 2048,
            batch_interval: Duration::from_millis(50),
            spill_path: PathBuf::from(SPILL_FILE_NAME),
            spill_budget_bytes: 64 * 1024 * 1024,
            rejected_budget_bytes: 16 * 1024 * 1024,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            spill_after: Duration::from_secs(3),
            insert_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// File name of the spill in the data directory.
pub const SPILL_FILE_NAME: &str = "audit-spill.jsonl";

impl WriterConfig {
    /// Defaults with the spill at `<data_dir>/audit-spill.jsonl`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            spill_path: data_dir.join(SPILL_FILE_NAME),
            ..Self::default()
        }
    }

    /// Where events the store refused permanently (not an outage: e.g. a row it cannot represent) are
    /// kept, next to the spill: `<spill>.rejected.jsonl`.
    pub fn rejected_path(&self) -> PathBuf {
        let mut name = self.spill_path.clone().into_os_string();
        name.push(".rejected.jsonl");
        PathBuf::from(name)
    }
}

/// Errors of the sink and the writer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit queue full (the store is behind or unreachable and the spill budget is used up); retry after {}s", retry_after.as_secs())]
    Backpressure { retry_after: Duration },
    #[error("the audit writer has shut down")]
    Closed,
    #[error("audit spill file {path}: {source}")]
    Spill { path: PathBuf, source: io::Error },
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    #[error("starting the audit writer's thread: {0}")]
    Thread(io::Error),
}

impl AuditError {
    /// The queue is full: answer 503 + `Retry-After`.
    pub fn is_backpressure(&self) -> bool {
        matches!(self, Self::Backpressure { .. })
    }

    /// The writer is gone (shutting down): also a 503, but not worth a quick retry on this replica.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// Suggested `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Backpressure { retry_after } => Some(*retry_after),
            Self::Closed => Some(Duration::from_secs(1)),
            Self::Spill { .. } | Self::Store(_) | Self::Thread(_) => None,
        }
    }
}

/// The writer's metrics (docs/audit.md, docs/operations.md). Names are registered as given (no registry prefix).
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    /// `namegate_audit_queue_depth`: events queued or reserved, not yet taken by the writer.
    pub queue_depth: Gauge,
    /// `namegate_audit_queue_bytes`: approximate bytes of the queued events.
    pub queue_bytes: Gauge,
    /// `namegate_audit_batch_duration_seconds`: one successful store append.
    pub batch_duration: Histogram,
    /// `namegate_audit_spill_bytes`: size of the spill file.
    pub spill_bytes: Gauge,
    /// `namegate_audit_replayed_events_total`: events moved from the spill into the store.
    pub replayed: Counter,
    /// `namegate_audit_events_written_total`: events confirmed in the store.
    pub written: Counter,
    /// `namegate_audit_spilled_events_total`: events appended to the spill.
    pub spilled: Counter,
    /// `namegate_audit_rejected_events_total`: events the store refused permanently, kept in the
    /// rejected file instead (should stay 0; alert on it).
    pub rejected: Counter,
    /// `namegate_audit_dropped_events_total`: events that could be written nowhere. Must stay 0.
    pub dropped: Counter,
    /// `namegate_audit_local_only_events_total`: events the store does not take by type (kubernaut
    /// DataStorage and namegate's own `signal.rejected`/`signal.ignored`), logged at info instead.
    pub local_only: Counter,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            // 0.5 ms … ~16 s.
            batch_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            spill_bytes: Gauge::default(),
            replayed: Counter::default(),
            written: Counter::default(),
            spilled: Counter::default(),
            rejected: Counter::default(),
            dropped: Counter::default(),
            local_only: Counter::default(),
        }
    }
}

impl AuditMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "namegate_audit_queue_depth",
            "Audit events queued or reserved and not yet taken by the writer",
            m.queue_depth.clone(),
        );
        registry.register(
            "namegate_audit_queue_bytes",
            "Approximate bytes held by the queued audit events (bounded by the queue byte budget)",
            m.queue_bytes.clone(),
        );
        registry.register(
            "namegate_audit_batch_duration_seconds",
            "Duration of one audit batch append to the store",
            m.batch_duration.clone(),
        );
        registry.register(
            "namegate_audit_spill_bytes",
            "Size of the audit spill file (events waiting for the store)",
            m.spill_bytes.clone(),
        );
        registry.register(
            "namegate_audit_replayed_events",
            "Audit events replayed from the spill file into the store",
            m.replayed.clone(),
        );
        registry.register(
            "namegate_audit_events_written",
            "Audit events confirmed in the store",
            m.written.clone(),
        );
        registry.register(
            "namegate_audit_spilled_events",
            "Audit events appended to the spill file while the store was unreachable",
            m.spilled.clone(),
        );
        registry.register(
            "namegate_audit_rejected_events",
            "Audit events the store refused permanently, kept in the rejected file (should be 0)",
            m.rejected.clone(),
        );
        registry.register(
            "namegate_audit_dropped_events",
            "Audit events that could be written nowhere (must be 0)",
            m.dropped.clone(),
        );
        registry.register(
            "namegate_audit_local_only_events",
            "Audit events the store does not accept by type (DataStorage), logged at info instead",
            m.local_only.clone(),
        );
        m
    }

    /// A snapshot of the counters and gauges.
    pub fn snapshot(&self) -> WriterStats {
        WriterStats {
            queue_depth: self.queue_depth.get(),
            spill_bytes: self.spill_bytes.get(),
            replayed: self.replayed.get(),
            written: self.written.get(),
            spilled: self.spilled.get(),
            rejected: self.rejected.get(),
            dropped: self.dropped.get(),
            local_only: self.local_only.get(),
        }
    }
}

/// Point-in-time writer figures (from [`AuditMetrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub queue_depth: i64,
    pub spill_bytes: i64,
    pub replayed: u64,
    pub written: u64,
    pub spilled: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub local_only: u64,
}

#[derive(Debug)]
struct Shared {
    metrics: AuditMetrics,
    /// Seconds a refused caller should wait: the writer's current store backoff.
    retry_after_secs: AtomicU64,
    /// Approximate bytes of the events in the queue.
    queued_bytes: AtomicU64,
    queue_budget_bytes: u64,
    /// Wakes the writer when a whole batch is waiting (writer/batch.rs).
    ready: BatchReady,
}

impl Shared {
    fn add_queued(&self, bytes: u64) {
        let now = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.queue_bytes.set(len_i64(now));
    }

    fn sub_queued(&self, bytes: u64) {
        let prev = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            })
            .unwrap_or(0);
        self.metrics
            .queue_bytes
            .set(len_i64(prev.saturating_sub(bytes)));
    }

    fn over_budget(&self) -> bool {
        self.queued_bytes.load(Ordering::Relaxed) >= self.queue_budget_bytes
    }
}

/// An event in the queue with its size ([`AuditEvent::approx_bytes`]), computed once when it is queued:
/// the byte budget is charged and released with this same number, and the writer never walks the
/// event again to find it (docs/audit.md, "The writer and what is durable when").
#[derive(Debug)]
struct Queued {
    event: AuditEvent,
    bytes: u64,
}

impl Queued {
    fn new(event: AuditEvent) -> Self {
        let bytes = event.approx_bytes();
        Self { event, bytes }
    }
}

/// The request path's handle on the audit queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

impl AuditSink {
    /// Reserves `n` queue slots without waiting. Fails with [`AuditError::Backpressure`] when the queue
    /// cannot take `n` more events (nothing is reserved then), [`AuditError::Closed`] after shutdown.
    pub fn try_reserve(&self, n: usize) -> Result<Permits<'_>, AuditError> {
        if self.shared.over_budget() {
            return Err(self.backpressure());
        }
        let result = self.tx.try_reserve_many(n);
        self.update_depth();
        match result {
            Ok(permits) => Ok(Permits {
                permits,
                remaining: n,
                sink: self,
            }),
            Err(TrySendError::Full(())) => Err(self.backpressure()),
            Err(TrySendError::Closed(())) => Err(AuditError::Closed),
        }
    }

    /// Queues one event without waiting (a reservation of one, filled at once).
    pub fn try_send(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.shared.over_budget() {
            return Err(self.backpressure());
        }
        // Counted before the writer can see (and subtract) it; taken back if it was not queued.
        let queued = Queued::new(event);
        let bytes = queued.bytes;
        self.shared.add_queued(bytes);
        let result = self.tx.try_send(queued);
        self.update_depth();
        if result.is_err() {
            self.shared.sub_queued(bytes);
        }
        match result {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(self.backpressure()),
            Err(TrySendError::Closed(_)) => Err(AuditError::Closed),
        }
    }

    /// Events queued or reserved right now.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn metrics(&self) -> &AuditMetrics {
        &self.shared.metrics
    }

    fn update_depth(&self) {
        let depth = self.queue_depth();
        self.shared
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.shared.ready.queued(depth);
    }

    fn backpressure(&self) -> AuditError {
        AuditError::Backpressure {
            retry_after: Duration::from_secs(
                self.shared.retry_after_secs.load(Ordering::Relaxed).max(1),
            ),
        }
    }
}

/// Reserved queue slots. Each send fills one; slots not used are released when this is dropped.
#[derive(Debug)]
pub struct Permits<'a> {
    permits: PermitIterator<'a, Queued>,
    remaining: usize,
    sink: &'a AuditSink,
}

impl Permits<'_> {
    /// Queues `event` on one reserved slot; the others stay reserved.
    pub fn send_one(&mut self, event: AuditEvent) {
        // Counted before it is visible to the writer, which subtracts the same number when it takes
        // the event.
        let queued = Queued::new(event);
        self.sink.shared.add_queued(queued.bytes);
        match self.permits.next() {
            Some(permit) => {
                self.remaining -= 1;
                permit.send(queued);
            }
            None => self.overrun(queued),
        }
        self.sink.update_depth();
    }

    /// Queues `event` on one reserved slot and releases the rest.
    pub fn send(mut self, event: AuditEvent) {
        self.send_one(event);
    }

    /// Slots still reserved.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// More events than reserved (a caller bug). Never drop the event: take a free slot if there is one,
    /// else wait for one off the request path.
    fn overrun(&self, queued: Queued) {
        tracing::warn!(
            event_id = %queued.event.event_id,
            "audit event sent beyond its reservation; reserve enough slots before acting"
        );
        match self.sink.tx.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(queued)) => {
                let tx = self.sink.tx.clone();
                let shared = self.sink.shared.clone();
                tokio::spawn(async move {
                    if let Err(mpsc::error::SendError(queued)) = tx.send(queued).await {
                        shared.sub_queued(queued.bytes);
                        report_dropped(
                            &shared.metrics,
                            &queued.event,
                            "the audit writer shut down",
                        );
                    }
                });
            }
            Err(TrySendError::Closed(queued)) => {
                self.sink.shared.sub_queued(queued.bytes);
                report_dropped(
                    &self.sink.shared.metrics,
                    &queued.event,
                    "the audit writer shut down",
                );
            }
        }
    }
}

/// An event that can be written nowhere: count it and log it whole, so it at least survives in the
/// logs.
fn report_dropped(metrics: &AuditMetrics, event: &AuditEvent, why: &str) {
    metrics.dropped.inc();
    let json = serde_json::to_string(event).unwrap_or_default();
    tracing::error!(event_id = %event.event_id, correlation_id = %event.correlation_id, reason = why, event = %json,
        "AUDIT EVENT DROPPED");
}

/// Handle to the writer task.
#[derive(Debug)]
pub struct WriterHandle {
    stop: CancellationToken,
    task: Running,
    shared: Arc<Shared>,
}

/// Where the writer runs.
#[derive(Debug)]
enum Running {
    /// A task on the caller's runtime ([`AuditWriter::spawn`]).
    Task(JoinHandle<WriterStats>),
    /// Its own thread and runtime ([`AuditWriter::spawn_dedicated`]): the final figures arrive here.
    Thread(oneshot::Receiver<WriterStats>),
}

impl WriterHandle {
    /// Stops accepting new reservations, writes everything queued (and reserved slots once filled) to
    /// the store — or to the spill when the store is unreachable — and returns the final figures.
    pub async fn shutdown(self) -> WriterStats {
        self.stop.cancel();
        let failed = match self.task {
            Running::Task(task) => match task.await {
                Ok(stats) => return stats,
                Err(e) => e.to_string(),
            },
            Running::Thread(done) => match done.await {
                Ok(stats) => return stats,
                Err(_) => "the writer's thread ended without its figures".to_owned(),
            },
        };
        tracing::error!(error = %failed, "audit writer task failed");
        self.shared.metrics.snapshot()
    }

    pub fn metrics(&self) -> &AuditMetrics {
        &self.shared.metrics
    }

    pub fn stats(&self) -> WriterStats {
        self.shared.metrics.snapshot()
    }
}

/// Spawns the writer task.
#[derive(Debug)]
pub struct AuditWriter;

impl AuditWriter {
    /// Registers the metrics in `registry`, opens the spill (replaying it first if a previous run left
    /// events in it) and spawns the writer.
    pub async fn spawn(
        store: AuditStore,
        config: WriterConfig,
        registry: &mut Registry,
    ) -> Result<(AuditSink, WriterHandle), AuditError> {
        Self::spawn_with_metrics(store, config, AuditMetrics::register(registry)).await
    }

    /// The writer on a thread of its own with a current-thread tokio runtime (docs/audit.md, "The
    /// writer's thread"): the store is opened there from `store_config` (a sqlx pool belongs to the
    /// runtime that drives its connections), so its round trips never queue behind request tasks on the
    /// caller's runtime. Semantics are those of [`AuditWriter::spawn`]; on shutdown the thread also
    /// closes its store (which writes the pending chain-head checkpoint).
    pub async fn spawn_dedicated(
        store_config: StoreConfig,
        config: WriterConfig,
        metrics: AuditMetrics,
    ) -> Result<(AuditSink, WriterHandle), AuditError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    // The spill's file I/O runs on this runtime's blocking threads.
                    .thread_name("audit-writer-io")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(AuditError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let store = match AuditStore::open_with(&store_config.for_batch_writer()).await
                    {
                        Ok(store) => store,
                        Err(e) => {
                            let _ = ready_tx.send(Err(AuditError::Store(e)));
                            return;
                        }
                    };
                    let (writer, sink) = match Writer::new(store.clone(), config, metrics).await {
                        Ok(made) => made,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((sink, writer.stop.clone())));
                    let stats = writer.run().await;
                    store.close().await;
                    let _ = done_tx.send(stats);
                });
            })
            .map_err(AuditError::Thread)?;
        let (sink, stop) = ready_rx.await.map_err(|_| {
            AuditError::Thread(io::Error::other("the audit writer's thread ended at start"))
        })??;
        let shared = sink.shared.clone();
        Ok((
            sink,
            WriterHandle {
                stop,
                task: Running::Thread(done_rx),
                shared,
            },
        ))
    }

    /// [`AuditWriter::spawn`] with metrics the caller registered (or not).
    pub async fn spawn_with_metrics(
        store: AuditStore,
        config: WriterConfig,
        metrics: AuditMetrics,
    ) -> Result<(AuditSink, WriterHandle), AuditError> {
        let (writer, sink) = Writer::new(store, config, metrics).await?;
        let stop = writer.stop.clone();
        let shared = sink.shared.clone();
        let task = tokio::spawn(writer.run());
        Ok((
            sink,
            WriterHandle {
                stop,
                task: Running::Task(task),
                shared,
            },
        ))
    }
}

impl Writer {
    /// Opens the spill (replaying it first if a previous run left events in it) and builds the writer
    /// and the queue, with the request path's end of it (the writer holds no sender: it stops once every
    /// sink is gone).
    async fn new(
        store: AuditStore,
        config: WriterConfig,
        metrics: AuditMetrics,
    ) -> Result<(Self, AuditSink), AuditError> {
        let spill = Spill::open(&config.spill_path)
            .await
            .map_err(|source| AuditError::Spill {
                path: config.spill_path.clone(),
                source,
            })?;
        if !spill.is_empty() {
            tracing::info!(path = %spill.path().display(), bytes = spill.len(),
                "audit spill holds events from an earlier run; replaying them before new events");
        }
        metrics.spill_bytes.set(len_i64(spill.len()));
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            metrics,
            retry_after_secs: AtomicU64::new(1),
            queued_bytes: AtomicU64::new(0),
            queue_budget_bytes: config.queue_budget_bytes.max(1),
            ready: BatchReady::new(config.batch_size),
        });
        let sink = AuditSink {
            tx,
            shared: shared.clone(),
        };
        let writer = Writer {
            store,
            rx,
            rejected_path: config.rejected_path(),
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            // Replay a leftover spill at once.
            next_probe: Instant::now(),
            cfg: config,
            shared,
            spill,
            pending: Vec::new(),
            shutting_down: false,
            stop: CancellationToken::new(),
        };
        Ok((writer, sink))
    }
}

fn len_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Jittered exponential backoff.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay: the current step with ±50 % jitter (so replicas that lost the store at the same
    /// moment do not probe it in lockstep), then the step doubles.
    fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter: f64 = rand::rng().random_range(0.5..1.5);
        base.mul_f64(jitter).min(self.max)
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Where a batch ended up.
enum Stored {
    /// Every event is in the store (or, if the store refused one permanently, in the rejected file).
    Done,
    /// The store is unreachable; these events (in order) are still to be written.
    Unavailable(Vec<AuditEvent>, StoreError),
}

struct Writer {
    store: AuditStore,
    rx: mpsc::Receiver<Queued>,
    cfg: WriterConfig,
    rejected_path: PathBuf,
    shared: Arc<Shared>,
    spill: Spill,
    /// Taken from the queue, not yet durable anywhere.
    pending: Vec<AuditEvent>,
    backoff: Backoff,
    /// While the spill holds events: when to try the store again.
    next_probe: Instant,
    shutting_down: bool,
    stop: CancellationToken,
}

impl Writer {
    fn metrics(&self) -> &AuditMetrics {
        &self.shared.metrics
    }

    async fn run(mut self) -> WriterStats {
        loop {
            // Not just "has unreplayed events": a spill whose emptying failed is retried here too.
            if !self.spill.is_empty() && Instant::now() >= self.next_probe {
                self.try_replay().await;
            }
            if !self.pending.is_empty() && !self.deliver_pending().await {
                // Nowhere to put the batch (spill budget used up, or the spill failing): stop draining
                // until the store can be tried again, so the queue fills and callers get 503s.
                self.publish_retry_after();
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep_until(self.next_probe) => continue,
                }
            }
            if !self.collect().await {
                break;
            }
        }
        self.drain().await;
        let stats = self.metrics().snapshot();
        tracing::info!(?stats, "audit writer stopped");
        stats
    }

    /// Waits for the next batch. Returns false when the writer should stop.
    async fn collect(&mut self) -> bool {
        let size = self.cfg.batch_size.max(1);
        let mut batch = Vec::with_capacity(size);
        let probe = (!self.spill.is_empty()).then_some(self.next_probe);
        tokio::select! {
            biased;
            () = self.stop.cancelled() => return false,
            n = self.rx.recv_many(&mut batch, size) => {
                if n == 0 {
                    // Every sink is gone.
                    return false;
                }
            }
            () = sleep_until_opt(probe), if probe.is_some() => return true,
        }
        batch::fill(
            &mut self.rx,
            &mut batch,
            size,
            self.cfg.batch_interval,
            &self.shared.ready,
            &self.stop,
        )
        .await;
        self.pending = self.taken(batch);
        self.set_queue_depth();
        true
    }

    /// Events left the queue: the bytes they were charged when queued no longer count against its
    /// budget.
    fn taken(&self, batch: Vec<Queued>) -> Vec<AuditEvent> {
        let (events, bytes) = unqueue(batch);
        self.shared.sub_queued(bytes);
        events
    }

    fn set_queue_depth(&self) {
        self.metrics()
            .queue_depth
            .set(i64::try_from(self.rx.len()).unwrap_or(i64::MAX));
    }

    fn publish_retry_after(&self) {
        let wait = self.next_probe.saturating_duration_since(Instant::now());
        self.shared.retry_after_secs.store(
            wait.as_secs().clamp(1, self.cfg.retry_max.as_secs().max(1)),
            Ordering::Relaxed,
        );
    }

    /// Moves `pending` to the store or the spill. False when it could go nowhere (it stays pending).
    async fn deliver_pending(&mut self) -> bool {
        if !self.spill.has_unreplayed() {
            let batch = std::mem::take(&mut self.pending);
            match self.store_with_retry(batch).await {
                Stored::Done => return true,
                Stored::Unavailable(rest, e) => {
                    tracing::warn!(error = %e, events = rest.len(), path = %self.spill.path().display(),
                        "audit store unreachable; spilling to the local file until it is back");
                    self.pending = rest;
                    self.next_probe = Instant::now()
                        + self
                            .backoff
                            .next_delay()
                            .max(e.retry_after().unwrap_or_default());
                }
            }
        }
        // The spill holds older events: newer ones go behind them, so replay keeps emission order.
        self.spill_pending().await
    }

    async fn spill_pending(&mut self) -> bool {
        let lines = match Spill::encode(&self.pending) {
            Ok(lines) => lines,
            Err(e) => {
                // Serialising an AuditEvent cannot fail (plain data); if it ever did, retrying would
                // not help either.
                for ev in std::mem::take(&mut self.pending) {
                    report_dropped(self.metrics(), &ev, &format!("cannot serialise: {e}"));
                }
                return true;
            }
        };
        let fits = self.spill.is_empty()
            || self.spill.len() + lines.len() as u64 <= self.cfg.spill_budget_bytes;
        if !fits && !self.shutting_down {
            tracing::warn!(
                spill_bytes = self.spill.len(),
                budget = self.cfg.spill_budget_bytes,
                "audit spill budget used up; no longer draining the queue (ingestion will answer 503)"
            );
            return false;
        }
        match self.spill.append_encoded(&lines).await {
            Ok(()) => {
                self.metrics().spilled.inc_by(self.pending.len() as u64);
                self.metrics().spill_bytes.set(len_i64(self.spill.len()));
                self.pending.clear();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.spill.path().display(),
                    "cannot append to the audit spill file; holding the batch in memory");
                if self.next_probe <= Instant::now() {
                    self.next_probe = Instant::now() + self.backoff.next_delay();
                }
                false
            }
        }
    }

    /// Appends with retries until `spill_after` has passed.
    async fn store_with_retry(&mut self, batch: Vec<AuditEvent>) -> Stored {
        let deadline = Instant::now() + self.cfg.spill_after;
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        let mut batch = batch;
        loop {
            match self.store_events(batch).await {
                Stored::Done => return Stored::Done,
                Stored::Unavailable(rest, e) => {
                    // The store's own Retry-After (DataStorage 429/503) is a floor on the wait.
                    let delay = backoff
                        .next_delay()
                        .max(e.retry_after().unwrap_or_default());
                    if Instant::now() + delay >= deadline {
                        return Stored::Unavailable(rest, e);
                    }
                    tracing::debug!(error = %e, ?delay, "audit append failed; retrying");
                    tokio::time::sleep(delay).await;
                    batch = rest;
                }
            }
        }
    }

    /// One attempt to store `events`, isolating events the store refuses permanently.
    async fn store_events(&mut self, events: Vec<AuditEvent>) -> Stored {
        let mut events = events;
        loop {
            match self.append_once(&events).await {
                Ok(()) => return Stored::Done,
                Err(e) if e.is_retryable() => return Stored::Unavailable(events, e),
                Err(StoreError::InvalidEvent { event_id, reason }) => {
                    // One bad event must not block the others.
                    let Some(i) = events.iter().position(|ev| ev.event_id == event_id) else {
                        return self.store_one_by_one(events).await;
                    };
                    let bad = events.remove(i);
                    self.reject(&bad, &reason).await;
                    if events.is_empty() {
                        return Stored::Done;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = events.len(),
                        "audit batch refused; storing its events one by one to isolate the cause");
                    return self.store_one_by_one(events).await;
                }
            }
        }
    }

    async fn store_one_by_one(&mut self, events: Vec<AuditEvent>) -> Stored {
        let mut iter = events.into_iter();
        while let Some(ev) = iter.next() {
            match self.append_once(std::slice::from_ref(&ev)).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    let mut rest = vec![ev];
                    rest.extend(iter);
                    return Stored::Unavailable(rest, e);
                }
                Err(e) => self.reject(&ev, &e.to_string()).await,
            }
        }
        Stored::Done
    }

    async fn append_once(&mut self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        // A span of its own per batch (a batch mixes the events of many requests, so it is no request's
        // child); its duration is the store's, visible next to the requests' spans.
        let span = tracing::info_span!("audit.batch", otel.kind = "client", events = events.len());
        let result = tokio::time::timeout(
            self.cfg.insert_timeout,
            tracing::Instrument::instrument(self.store.append_batch(events), span),
        )
        .await;
        match result {
            Ok(Ok(report)) => {
                self.metrics()
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
                self.metrics()
                    .written
                    .inc_by(report.inserted + report.duplicates);
                self.metrics().local_only.inc_by(report.local_only);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            // A hung store is an unavailable store. If the commit went through after all, the replay
            // finds the events by event_id and skips them.
            Err(_) => Err(StoreError::Timeout(self.cfg.insert_timeout)),
        }
    }

    /// Keeps an event the store refused permanently in the rejected file.
    async fn reject(&mut self, event: &AuditEvent, reason: &str) {
        tracing::error!(event_id = %event.event_id, correlation_id = %event.correlation_id, reason,
            path = %self.rejected_path.display(), "audit store refused an event permanently; keeping it in the rejected file");
        let line = serde_json::json!({ "reason": reason, "event": event });
        match append_bounded(&self.rejected_path, &line, self.cfg.rejected_budget_bytes).await {
            Ok(()) => {
                self.metrics().rejected.inc();
            }
            Err(e) => report_dropped(
                self.metrics(),
                event,
                &format!("rejected by the store ({reason}) and the rejected file failed: {e}"),
            ),
        }
    }

    /// Replays the spill into the store, oldest first, chunk by chunk. On success the spill is emptied;
    /// when the store is still unreachable the next probe is scheduled.
    async fn try_replay(&mut self) {
        match tokio::time::timeout(self.cfg.probe_timeout, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.replay_failed_after(&e.to_string(), e.retry_after()),
            Err(_) => return self.replay_failed("probe timed out"),
        }
        while self.spill.has_unreplayed() {
            let chunk = match self.spill.read_chunk(self.cfg.batch_size.max(1)).await {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::error!(error = %e, path = %self.spill.path().display(), "cannot read the audit spill file");
                    return self.replay_failed("spill unreadable");
                }
            };
            for bad in &chunk.bad_lines {
                self.reject_line(bad).await;
            }
            let n = chunk.events.len() as u64;
            match self.store_events(chunk.events).await {
                Stored::Done => {
                    self.metrics().replayed.inc_by(n);
                    self.spill.mark_replayed(chunk.end);
                }
                Stored::Unavailable(_, e) => {
                    return self.replay_failed_after(&e.to_string(), e.retry_after());
                }
            }
        }
        match self.spill.clear().await {
            Ok(()) => {
                tracing::info!("audit store is back; spill replayed and emptied");
                self.metrics().spill_bytes.set(0);
                self.backoff.reset();
                self.shared.retry_after_secs.store(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Everything is in the store; the next probe retries the clear.
                tracing::error!(error = %e, path = %self.spill.path().display(), "cannot empty the audit spill file");
                self.replay_failed("spill not emptied");
            }
        }
    }

    fn replay_failed(&mut self, why: &str) {
        self.replay_failed_after(why, None);
    }

    /// [`Writer::replay_failed`], waiting at least `floor` (the store's `Retry-After`).
    fn replay_failed_after(&mut self, why: &str, floor: Option<Duration>) {
        let delay = self.backoff.next_delay().max(floor.unwrap_or_default());
        tracing::debug!(reason = why, ?delay, "audit store still unreachable");
        self.next_probe = Instant::now() + delay;
        self.publish_retry_after();
    }

    async fn reject_line(&mut self, bad: &spill::BadLine) {
        tracing::error!(offset = bad.offset, error = %bad.error, "unparseable line in the audit spill file; moving it to the rejected file");
        let line = serde_json::json!({ "reason": format!("unparseable spill line: {}", bad.error), "line": bad.text });
        match append_bounded(&self.rejected_path, &line, self.cfg.rejected_budget_bytes).await {
            Ok(()) => {
                self.metrics().rejected.inc();
            }
            Err(e) => {
                self.metrics().dropped.inc();
                tracing::error!(error = %e, line = %bad.text, "AUDIT SPILL LINE DROPPED");
            }
        }
    }

    /// Graceful stop: no new reservations; everything queued goes to the store, or to the spill (budget
    /// ignored: exceeding it beats losing events).
    async fn drain(&mut self) {
        self.shutting_down = true;
        self.rx.close();
        if self.spill.has_unreplayed() {
            self.try_replay().await;
        }
        loop {
            if self.pending.is_empty() {
                let mut batch = Vec::with_capacity(self.cfg.batch_size.max(1));
                // After close(), recv_many still returns buffered events and waits for reserved slots
                // to be filled or released; 0 means nothing is left.
                if self
                    .rx
                    .recv_many(&mut batch, self.cfg.batch_size.max(1))
                    .await
                    == 0
                {
                    break;
                }
                self.pending = self.taken(batch);
            }
            if !self.deliver_pending().await {
                for ev in std::mem::take(&mut self.pending) {
                    report_dropped(
                        self.metrics(),
                        &ev,
                        "shutting down with the store unreachable and the spill failing",
                    );
                }
            }
        }
        self.set_queue_depth();
    }
}

/// The events of `batch`, in order, and the bytes they were charged when queued.
fn unqueue(batch: Vec<Queued>) -> (Vec<AuditEvent>, u64) {
    let bytes = batch.iter().map(|q| q.bytes).sum();
    (batch.into_iter().map(|q| q.event).collect(), bytes)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Appends one JSON line unless the file would grow past `budget` bytes (then an error saying so).
async fn append_bounded(path: &Path, value: &serde_json::Value, budget: u64) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    let size = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    if size + line.len() as u64 > budget {
        return Err(io::Error::other(format!(
            "the rejected-event file is full ({size} of {budget} bytes)"
        )));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    file.write_all(&line).await?;
    file.flush().await?;
    file.sync_data().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(150));
    }

    #[test]
    fn rejected_file_sits_next_to_the_spill() {
        let cfg = WriterConfig::in_data_dir(Path::new("/var/lib/namegate"));
        assert_eq!(
            cfg.spill_path,
            Path::new("/var/lib/namegate/audit-spill.jsonl")
        );
        assert_eq!(
            cfg.rejected_path(),
            Path::new("/var/lib/namegate/audit-spill.jsonl.rejected.jsonl")
        );
    }

    fn sized_event(kib: usize) -> AuditEvent {
        use crate::audit::event::{EventOutcome, EventType};
        let mut ev = AuditEvent::new(EventType::SignalDeduplicated, EventOutcome::Success, "rr-1");
        ev.event_data = serde_json::json!({ "blob": "x".repeat(kib * 1024) }).into();
        ev
    }

    fn test_sink(capacity: usize) -> (AuditSink, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            metrics: AuditMetrics::default(),
            retry_after_secs: AtomicU64::new(1),
            queued_bytes: AtomicU64::new(0),
            queue_budget_bytes: u64::MAX,
            ready: BatchReady::new(capacity),
        });
        (AuditSink { tx, shared }, rx)
    }

    #[tokio::test]
    async fn the_queue_releases_exactly_the_bytes_it_charged() {
        let (sink, mut rx) = test_sink(16);
        let events: Vec<AuditEvent> = [0, 1, 3, 7].into_iter().map(sized_event).collect();
        let charged: u64 = events.iter().map(AuditEvent::approx_bytes).sum();
        let mut permits = sink.try_reserve(3).unwrap_or_else(|e| panic!("{e}"));
        permits.send_one(events[0].clone());
        permits.send_one(events[1].clone());
        permits.send(events[2].clone());
        sink.try_send(events[3].clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sink.shared.queued_bytes.load(Ordering::Relaxed), charged);

        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 16).await, 4);
        // Each event carries the size it was charged; the writer releases that, not a new estimate.
        for (q, ev) in batch.iter().zip(&events) {
            assert_eq!(q.bytes, ev.approx_bytes());
        }
        let (taken, bytes) = unqueue(batch);
        assert_eq!(taken, events);
        assert_eq!(bytes, charged);
        sink.shared.sub_queued(bytes);
        assert_eq!(sink.shared.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(sink.metrics().queue_bytes.get(), 0);
    }

    #[tokio::test]
    async fn an_event_the_closed_queue_refuses_releases_its_bytes() {
        let (sink, rx) = test_sink(4);
        let mut permits = sink.try_reserve(1).unwrap_or_else(|e| panic!("{e}"));
        drop(rx);
        // Beyond the reservation, with the writer gone: reported dropped, its bytes not left charged.
        permits.send_one(sized_event(1));
        let after_first = sink.shared.queued_bytes.load(Ordering::Relaxed);
        permits.send_one(sized_event(2));
        assert_eq!(
            sink.shared.queued_bytes.load(Ordering::Relaxed),
            after_first
        );
        assert_eq!(sink.metrics().dropped.get(), 1);
    }

    #[test]
    fn backpressure_is_classified() {
        let e = AuditError::Backpressure {
            retry_after: Duration::from_secs(3),
        };
        assert!(e.is_backpressure());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(!AuditError::Closed.is_backpressure());
    }
}
