//! Phase rules (docs/admission.md): which RRs are active, terminal and suppressing.
//!
//! Phases are compared as text, not parsed into a closed enum: the orchestrator owns the field and may
//! add phases before namegate knows them, and an unknown phase must count as active (the safe side —
//! it suppresses a new remediation rather than starting a second one).

use jiff::Timestamp;

/// Phases after which the orchestrator does nothing more for the RR.
pub const TERMINAL_PHASES: [&str; 5] = ["Completed", "Failed", "TimedOut", "Skipped", "Cancelled"];

/// Every phase of the CRD's enum, in lifecycle order.
pub const ALL_PHASES: [&str; 12] = [
    "Pending",
    "Processing",
    "Analyzing",
    "AwaitingApproval",
    "Executing",
    "Verifying",
    "Blocked",
    "Completed",
    "Failed",
    "TimedOut",
    "Skipped",
    "Cancelled",
];

/// The completion outcome that keeps a terminal RR suppressing until a human acts.
pub const MANUAL_REVIEW_REQUIRED: &str = "ManualReviewRequired";

pub fn is_terminal(phase: Option<&str>) -> bool {
    phase.is_some_and(|p| TERMINAL_PHASES.contains(&p))
}

/// Empty, unknown, `Blocked` and `Verifying` phases are all active.
pub fn is_active(phase: Option<&str>) -> bool {
    !is_terminal(phase)
}

/// What suppression depends on; a borrowed view so the index and full objects share one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseView<'a> {
    pub phase: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub next_allowed_execution: Option<Timestamp>,
}

impl PhaseView<'_> {
    pub fn is_active(&self) -> bool {
        is_active(self.phase)
    }

    /// A suppressing RR absorbs new signals of its fingerprint as duplicates: it is active, or it
    /// ended needing manual review, or its back-off (`nextAllowedExecution`) has not elapsed at `now`.
    pub fn is_suppressing(&self, now: Timestamp) -> bool {
        self.is_active()
            || self.outcome == Some(MANUAL_REVIEW_REQUIRED)
            || self.next_allowed_execution.is_some_and(|t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(phase: Option<&str>) -> PhaseView<'_> {
        PhaseView {
            phase,
            ..PhaseView::default()
        }
    }

    #[test]
    fn terminal_and_active_partition_the_phases() {
        for p in ALL_PHASES {
            assert_ne!(is_terminal(Some(p)), is_active(Some(p)), "{p}");
        }
        assert_eq!(
            ALL_PHASES.iter().filter(|p| is_terminal(Some(p))).count(),
            TERMINAL_PHASES.len()
        );
        for active in [
            None,
            Some(""),
            Some("Blocked"),
            Some("Verifying"),
            Some("SomethingNew"),
            Some("completed"),
        ] {
            assert!(is_active(active), "{active:?} must be active");
        }
    }

    #[test]
    fn suppression_rules() {
        let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-11-26T12:00:01Z".parse().unwrap();
        let earlier: Timestamp = "2026-11-26T11:59:59Z".parse().unwrap();

        assert!(view(None).is_suppressing(now));
        assert!(view(Some("Executing")).is_suppressing(now));
        for terminal in TERMINAL_PHASES {
            assert!(!view(Some(terminal)).is_suppressing(now), "{terminal}");
            let manual = PhaseView {
                outcome: Some(MANUAL_REVIEW_REQUIRED),
                ..view(Some(terminal))
            };
            assert!(manual.is_suppressing(now));
            let other = PhaseView {
                outcome: Some("Remediated"),
                ..view(Some(terminal))
            };
            assert!(!other.is_suppressing(now));
            let backoff = PhaseView {
                next_allowed_execution: Some(later),
                ..view(Some(terminal))
            };
            assert!(backoff.is_suppressing(now));
            let elapsed = PhaseView {
                next_allowed_execution: Some(earlier),
                ..view(Some(terminal))
            };
            assert!(!elapsed.is_suppressing(now));
            // The boundary instant itself is no longer "in the future".
            let exact = PhaseView {
                next_allowed_execution: Some(now),
                ..view(Some(terminal))
            };
            assert!(!exact.is_suppressing(now));
        }
    }
}
