//! What a run did, for the operator (docs/migration.md, "The report").

use std::collections::BTreeMap;
use std::fmt;

/// An ID left as it is, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Left {
    pub correlation_id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub source: String,
    pub dry_run: bool,
    /// Correlation IDs examined (legacy, new-format, look-alike).
    pub ids_scanned: usize,
    /// Legacy IDs rewritten (planned, in a dry run) per format.
    pub by_format: BTreeMap<String, usize>,
    /// Distinct fingerprints of the rewritten IDs.
    pub fingerprints: usize,
    /// New names (attempts) assigned.
    pub attempts_assigned: usize,
    /// Rows whose correlation ID changed (would change, in a dry run).
    pub rows_rewritten: u64,
    /// Attestation rows written (DataStorage).
    pub attestations: usize,
    /// IDs in the new format found (what a finished migration leaves).
    pub already_migrated: usize,
    /// Legacy IDs already recorded as migrated by an earlier run.
    pub previously_migrated: usize,
    /// UUID-shaped IDs that are not RR UIDs: never touched.
    pub look_alikes: usize,
    /// Legacy chains per DataStorage verification class.
    pub chain_classes: BTreeMap<String, usize>,
    /// Chains that did not verify and were re-chained because the operator asked.
    pub rechained_unverified: Vec<Left>,
    pub unresolved: Vec<Left>,
    pub failed: Vec<Left>,
    /// Live RRs labelled/annotated, and already right.
    pub live_labelled: usize,
    pub live_unchanged: usize,
    /// What the live legacy RRs should carry after this run (not printed).
    pub live_assign: crate::resolve::Assignments,
}

impl Report {
    /// Whether the run changed nothing.
    pub fn is_noop(&self) -> bool {
        self.rows_rewritten == 0 && self.attestations == 0 && self.live_labelled == 0
    }

    /// 0: complete; 2: something was left unresolved; 1: something failed.
    pub fn exit_code(&self) -> i32 {
        if !self.failed.is_empty() {
            1
        } else if !self.unresolved.is_empty() {
            2
        } else {
            0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would rewrite"
        } else {
            "rewrote"
        };
        writeln!(
            f,
            "namegate-migrate {}{}",
            self.source,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        )?;
        writeln!(f, "  correlation IDs examined:   {}", self.ids_scanned)?;
        for (format, n) in &self.by_format {
            writeln!(f, "  {verb} {format}: {n}")?;
        }
        writeln!(f, "  fingerprints:               {}", self.fingerprints)?;
        writeln!(
            f,
            "  attempts assigned:          {}",
            self.attempts_assigned
        )?;
        if self.dry_run {
            writeln!(f, "  rows to rewrite:            {}", self.rows_rewritten)?;
        } else {
            writeln!(f, "  rows rewritten:             {}", self.rows_rewritten)?;
        }
        writeln!(f, "  attestation rows:           {}", self.attestations)?;
        writeln!(f, "  already in the new format:  {}", self.already_migrated)?;
        writeln!(
            f,
            "  migrated by earlier runs:   {}",
            self.previously_migrated
        )?;
        writeln!(
            f,
            "  UUIDs that are not RR UIDs: {} (never touched)",
            self.look_alikes
        )?;
        for (class, n) in &self.chain_classes {
            writeln!(f, "  legacy chains {class}: {n}")?;
        }
        if self.live_labelled + self.live_unchanged > 0 {
            writeln!(
                f,
                "  live RRs labelled:          {} ({} already labelled)",
                self.live_labelled, self.live_unchanged
            )?;
        }
        for l in &self.rechained_unverified {
            writeln!(
                f,
                "  re-chained on request:      {} ({})",
                l.correlation_id, l.reason
            )?;
        }
        for l in &self.unresolved {
            writeln!(f, "  UNRESOLVED {}: {}", l.correlation_id, l.reason)?;
        }
        for l in &self.failed {
            writeln!(f, "  FAILED {}: {}", l.correlation_id, l.reason)?;
        }
        if self.is_noop() && !self.dry_run {
            writeln!(
                f,
                "nothing to change: every resolvable legacy ID is already migrated; no row was written"
            )?;
        }
        Ok(())
    }
}
