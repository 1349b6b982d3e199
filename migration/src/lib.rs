//! The correlation-ID migration (contract §9), starting with its pure core: the plan.
//!
//! Earlier gateway versions keyed audit trails by random-suffix RR names
//! (`rr-{fp[:12]}-{uuid[:8]}`, `rr-{fp[:12]}-{unix seconds}`) or by RR UIDs. The migration gives each
//! legacy remediation the name namegate would have given it: the remediations of one fingerprint,
//! ordered by their first event, become attempts 1, 2, … and their trails move to `name(fp, n)`.
//! Deciding that mapping is pure and lives here; reading the stores, rewriting rows in checkpointed
//! transactions and labelling live RRs are the I/O around it (the binary arrives with the migration
//! issue).
#![forbid(unsafe_code)]

pub mod plan;

pub use plan::{LegacyRemediation, Plan, PlanError, Rewrite, Unresolved, plan};
