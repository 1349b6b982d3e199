//! The audit trail (contract §8).

pub mod event;

pub use event::{AuditEvent, EventOutcome, EventType};
