//! The correlation-ID migration (docs/migration.md).
//!
//! Earlier gateway versions keyed audit trails by random-suffix RR names
//! (`rr-{fp[:12]}-{uuid[:8]}`, `rr-{fp[:12]}-{unix seconds}`) or by RR UIDs. The migration gives each
//! legacy remediation the name namegate would have given it: the remediations of one fingerprint,
//! ordered by their first event, become attempts 1, 2, … and their trails move to `name(fp, n)`.
//!
//! - [`plan`]: the pure mapping; [`resolve`]: from what a store shows to plan input.
//! - [`datastorage`]: kubernaut DataStorage's database — its hash chain, its verification, the
//!   migration that re-chains under the new names.
//! - [`namegate_store`]: namegate's own audit store (SQLite, PostgreSQL).
//! - [`live`]: live legacy RRs in the cluster (resolution, labels).
//! - [`fixture`]: realistic DataStorage databases for tests and the bench.
//! - [`walk`]: resolving one fingerprint group at a time (bounded memory).
//! - [`report`]: what a run did.
#![forbid(unsafe_code)]

pub mod datastorage;
pub mod fixture;
pub mod live;
pub mod namegate_store;
pub mod plan;
pub mod report;
pub mod resolve;
pub mod walk;

pub use plan::{LegacyRemediation, Plan, PlanError, Rewrite, Unresolved, plan};
