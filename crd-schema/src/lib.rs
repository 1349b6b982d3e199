//! The pure core of namegate: everything that is a rule rather than an action.
//!
//! - [`fingerprint`]: the identity of the workload a signal is about (contract §4).
//! - [`name`]: the deterministic, reversible RR name that serves as the lock (contract §5).
//! - [`correlation`]: correlation IDs, new and legacy, as the audit trail and the migration see them.
//! - [`phase`]: which RRs are active, terminal and suppressing (contract §1).
//! - [`rr`]: the `RemediationRequest` custom resource (contract §6) and its CRD.
//!
//! Nothing here performs I/O, so every rule can be tested exhaustively and reused by the gateway, the
//! migration and the tools without pulling a runtime in.
#![forbid(unsafe_code)]

pub mod correlation;
pub mod fingerprint;
pub mod name;
pub mod phase;
pub mod rr;

pub use correlation::CorrelationId;
pub use fingerprint::{Fingerprint, Target, TargetError, TargetField};
pub use name::{Attempt, NameError, ParsedName};
pub use rr::{RemediationRequest, RemediationRequestSpec, RemediationRequestStatus};

/// Labels and annotations the gateway puts on every RR it creates (contract §6).
pub mod meta {
    /// `app.kubernetes.io/managed-by` value.
    pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "namegate";
    /// The attempt number, as decimal text; legacy RRs get it from the migration.
    pub const ATTEMPT_LABEL: &str = "namegate.io/attempt";
    /// The correlation ID of the RR's audit trail (its name for new RRs).
    pub const CORRELATION_ANNOTATION: &str = "namegate.io/correlation-id";
}
