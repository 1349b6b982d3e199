//! The pure core of namegate: everything that is a rule rather than an action.
//!
//! - [`fingerprint`]: the identity of the workload a signal is about (docs/compatibility.md).
//! - [`name`]: the deterministic, reversible RR name that serves as the lock (docs/decisions/0001-name-as-lock.md).
//! - [`correlation`]: correlation IDs, new and legacy, as the audit trail and the migration see them.
//! - [`phase`]: which RRs are active, terminal and suppressing (docs/admission.md).
//! - [`rr`]: the `RemediationRequest` custom resource (docs/api.md) and its CRD.
//!
//! Nothing here performs I/O, so every rule can be tested exhaustively and reused by the gateway, the
//! migration and the tools without pulling a runtime in.
//!
//! # For other RR creators
//!
//! The RR name is the lock: an RR for a workload can only be created under `name(fingerprint, n)`, so two
//! creators racing for the same attempt get one `201` and one `409 AlreadyExists`. namegate's chart installs
//! a ValidatingAdmissionPolicy that makes the API server refuse any other name (docs/creators.md), so a
//! creator that is not the gateway — another controller, a script, an operator's tool — must compute names
//! with this crate (or `namegate name`) and label each RR with its attempt:
//!
//! ```
//! use crd_schema::{Attempt, Fingerprint, Target, meta, name};
//!
//! let target = Target {
//!     cluster: None,
//!     namespace: "prod".into(),
//!     kind: "Deployment".into(),
//!     name: "payment-api".into(),
//!     api_version: Some("apps/v1".into()),
//! };
//! let fp: Fingerprint = target.fingerprint(); // sha256("prod:Deployment:payment-api")
//! assert_eq!(target.fingerprint_input(), "prod:Deployment:payment-api");
//!
//! // Attempt 1 is `rr-` + 52 characters of base32; later attempts append `-n`.
//! let first = name::name(&fp, Attempt::FIRST);
//! assert_eq!(first.len(), name::BASE_LEN);
//! let third = name::name(&fp, Attempt::new(3).unwrap());
//! assert_eq!(third, format!("{first}-3"));
//!
//! // Names parse back; legacy and foreign names do not.
//! let parsed = name::parse(&third).unwrap();
//! assert_eq!((parsed.fingerprint, parsed.attempt.get()), (fp, 3));
//! assert!(name::parse("rr-b157a3a9e42f-1c2b5576").is_err());
//!
//! // The label the lock policy checks on every create.
//! let label = (meta::ATTEMPT_LABEL, parsed.attempt.to_string());
//! assert_eq!(label, ("namegate.io/attempt", "3".to_string()));
//!
//! // `spec.signalFingerprint` is the lowercase hex of the digest; it parses back strictly.
//! assert_eq!(fp.to_hex().parse::<Fingerprint>(), Ok(fp));
//! ```
//!
//! Which attempt to create follows the phase rules in [`phase`]: while an RR of the fingerprint is
//! suppressing ([`phase::PhaseView::is_suppressing`]) a new signal is a duplicate of it; after it ends, the
//! next attempt is the highest existing one plus one ([`Attempt::next`]). The runnable example
//! `crd-schema/examples/creator.rs` (`cargo run -p crd-schema --example creator`) builds a whole RR.
#![forbid(unsafe_code)]

pub mod correlation;
pub mod fingerprint;
pub mod kubernaut;
pub mod name;
pub mod phase;
pub mod rr;

pub use correlation::CorrelationId;
pub use fingerprint::{Fingerprint, Target, TargetError, TargetField};
pub use name::{Attempt, NameError, ParsedName};
pub use rr::{RemediationRequest, RemediationRequestSpec, RemediationRequestStatus};

/// Labels and annotations the gateway puts on every RR it creates (docs/api.md).
pub mod meta {
    /// `app.kubernetes.io/managed-by` value.
    pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "namegate";
    /// The attempt number, as decimal text; legacy RRs get it from the migration.
    pub const ATTEMPT_LABEL: &str = "namegate.io/attempt";
    /// The correlation ID of the RR's audit trail (its name for new RRs).
    pub const CORRELATION_ANNOTATION: &str = "namegate.io/correlation-id";
    /// Prefix of the per-replica occurrence totals: `occurrences.namegate.io/<instance>` holds the
    /// absolute number of occurrences that gateway process counted for this object (decimal text).
    /// Annotations, not status: a whole-status replacement by another writer cannot wipe them.
    pub const OCCURRENCES_PREFIX: &str = "occurrences.namegate.io/";
    /// Occurrences counted before any gateway process wrote its own total (the migration, an
    /// earlier gateway): the base the per-replica totals add to.
    pub const OCCURRENCES_BASE_ANNOTATION: &str = "namegate.io/occurrences-base";
    /// The admission attempt that created the RR (a UUID): lets the request that made it recognise
    /// its own create after the answer to it was lost.
    pub const CREATED_BY_ANNOTATION: &str = "namegate.io/created-by";
}
