//! What a run did, for the operator (docs/migration.md, "The report and the exit status").
//!
//! The per-ID lines (re-chained on request, unresolved, failed) are written as they are found, so
//! the report holds counters only: its memory does not grow with the number of remediations.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};

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
    /// Chains that did not verify and were re-chained because the operator asked (each listed).
    pub rechained_unverified: usize,
    /// IDs left unresolved (each listed with its reason).
    pub unresolved: usize,
    /// IDs whose migration failed (each listed with its reason).
    pub failed: usize,
    /// The most correlation IDs the run held in memory at once (one page of the scan, one
    /// fingerprint group, one batch): the figure that stays bounded whatever the store's size.
    pub peak_ids_held: usize,
    /// Live RRs labelled/annotated, and already right.
    pub live_labelled: usize,
    pub live_unchanged: usize,
    /// What the live legacy RRs should carry after this run (not printed).
    pub live_assign: crate::resolve::Assignments,
}

/// The kinds of per-ID line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Rechained,
    Unresolved,
    Failed,
}

impl Report {
    /// The first line of the report, written before the run starts.
    pub fn write_header(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "namegate-migrate {}{}",
            self.source,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        )
    }

    /// Writes one per-ID line now and counts it.
    pub fn line(&mut self, out: &mut dyn Write, kind: LineKind, l: &Left) -> io::Result<()> {
        match kind {
            LineKind::Rechained => {
                self.rechained_unverified += 1;
                writeln!(
                    out,
                    "  re-chained on request:      {} ({})",
                    l.correlation_id, l.reason
                )
            }
            LineKind::Unresolved => {
                self.unresolved += 1;
                writeln!(out, "  UNRESOLVED {}: {}", l.correlation_id, l.reason)
            }
            LineKind::Failed => {
                self.failed += 1;
                writeln!(out, "  FAILED {}: {}", l.correlation_id, l.reason)
            }
        }
    }

    /// Whether the run changed nothing.
    pub fn is_noop(&self) -> bool {
        self.rows_rewritten == 0 && self.attestations == 0 && self.live_labelled == 0
    }

    /// 0: complete; 2: something was left unresolved; 1: something failed.
    pub fn exit_code(&self) -> i32 {
        if self.failed > 0 {
            1
        } else if self.unresolved > 0 {
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
        writeln!(
            f,
            "  re-chained on request:      {} (listed above)",
            self.rechained_unverified
        )?;
        writeln!(
            f,
            "  unresolved IDs:             {} (listed above)",
            self.unresolved
        )?;
        writeln!(
            f,
            "  failed IDs:                 {} (listed above)",
            self.failed
        )?;
        writeln!(f, "  most IDs held at once:      {}", self.peak_ids_held)?;
        if self.is_noop() && !self.dry_run {
            writeln!(
                f,
                "nothing to change: every resolvable legacy ID is already migrated; no row was written"
            )?;
        }
        Ok(())
    }
}
