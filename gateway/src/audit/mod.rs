//! The audit trail (docs/audit.md): every admission decision, durable, tamper-evident and looked up by
//! correlation ID. See `docs/audit.md`.
//!
//! - [`event`]: the envelope the admission code emits.
//! - [`event_data`]: its `event_data`, held as canonical JSON text built on the request path.
//! - [`payload`]: kubernaut's event set and shapes (`GatewayAuditPayload`), one builder per event.
//! - [`datastorage`]: kubernaut DataStorage's wire form of an event.
//! - [`writer`]: the off-critical-path writer (bounded queue, batches, spill, replay) and the
//!   [`writer::AuditSink`] the request path uses.
//! - [`store`]: one store over SQLite and PostgreSQL, versioned migrations, append-only rows.
//! - [`chain`]: the per-correlation hash chain (canonical form, SHA-256 / HMAC-SHA256).
//! - [`checkpoint`]: chain heads written outside the database, so deletions are detected.
//! - [`lookup`]: the trail of one correlation ID, grouped by RR uid, paginated.
//! - [`cli`]: `namegate audit show|verify|migrate-schema`.

pub mod chain;
pub mod checkpoint;
pub mod cli;
pub mod datastorage;
pub mod event;
pub mod event_data;
pub mod lookup;
pub mod payload;
pub mod store;
pub mod writer;

pub use event::{AuditEvent, EventOutcome, EventType};
pub use event_data::EventData;
pub use writer::{AuditError, AuditSink, Permits};
