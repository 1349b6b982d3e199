//! DataStorage's chain verification, reproduced, and the classification of chains it rejects
//! (docs/migration.md, "Verifying before rewriting").
//!
//! [`verify`] is DataStorage's `verifyEventChain`: hashed rows of one correlation ID in
//! `event_timestamp ASC, event_id ASC` order, `prev` starting at `""`, each row hashed with its own
//! algorithm over `prev ‖ C`, its stored `previous_event_hash` compared with `prev`, then `prev` = the
//! row's *stored* hash. [`classify`] looks further when that walk fails: if every row's hash is right
//! for the previous hash it *claims* and the claims form one tree rooted at `""`, no row was edited or
//! removed from inside the chain and only the order differs (kubernaut's same-second ties, late events);
//! anything else is a break.

use std::collections::{HashMap, HashSet};

use super::canonical::{HashError, HmacKey, Row};

/// Sorts rows into DataStorage's verification order.
pub fn verifier_order(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        (a.event_timestamp, a.event_id.as_str()).cmp(&(b.event_timestamp, b.event_id.as_str()))
    });
}

/// One entry of DataStorage's `tampered_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tampered {
    pub event_id: String,
    pub kind: TamperKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamperKind {
    /// "Previous hash mismatch: event claims different previous_event_hash".
    PreviousHashMismatch,
    /// "Event hash mismatch: event data has been tampered".
    EventHashMismatch,
}

/// What DataStorage's `POST /api/v1/audit/verify-chain` would answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    pub total_events: usize,
    pub verified_events: usize,
    pub skipped_null_hash: usize,
    pub tampered: Vec<Tampered>,
}

impl Verification {
    pub fn is_valid(&self) -> bool {
        self.tampered.is_empty()
    }
}

/// Verifies the rows of one correlation ID (any order; unhashed rows are skipped) exactly as
/// DataStorage does.
pub fn verify(rows: &[Row], key: Option<&HmacKey>) -> Result<Verification, HashError> {
    let mut hashed: Vec<Row> = rows.iter().filter(|r| r.is_hashed()).cloned().collect();
    verifier_order(&mut hashed);
    let mut out = Verification {
        total_events: hashed.len(),
        skipped_null_hash: rows.len() - hashed.len(),
        ..Verification::default()
    };
    let mut prev = String::new();
    for row in &hashed {
        let expected = row.compute_hash(&prev, key)?;
        let stored_prev = row.previous_event_hash.as_deref().unwrap_or_default();
        let stored = row.event_hash.as_deref().unwrap_or_default();
        if stored_prev != prev {
            out.tampered.push(Tampered {
                event_id: row.event_id.clone(),
                kind: TamperKind::PreviousHashMismatch,
            });
        }
        if stored != expected {
            out.tampered.push(Tampered {
                event_id: row.event_id.clone(),
                kind: TamperKind::EventHashMismatch,
            });
        } else {
            out.verified_events += 1;
        }
        prev = stored.to_owned();
    }
    Ok(out)
}

/// Why a chain is (or is not) fit to be re-chained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainClass {
    /// DataStorage's verification passes.
    Valid,
    /// Fails only because rows written in one order share a timestamp and sort differently by their
    /// random `event_id` (kubernaut issue #2318): every row authenticates under the previous hash it
    /// claims, the claims form one tree from `""` covering every row, and no link goes back in time.
    SameSecondTies,
    /// Every row authenticates and every link points into the chain, from one root `""`, but some
    /// event was linked after a newer one (late delivery, clock skew, DLQ replay).
    OutOfOrder,
    /// Every row authenticates but the chain does not start at `""`: its first rows are gone
    /// (retention purge, or deletion — indistinguishable).
    HeadMissing,
    /// A row does not hash to its stored value, or a link points outside the chain: edited or
    /// removed rows.
    Tampered,
}

impl ChainClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::SameSecondTies => "same-second-ties",
            Self::OutOfOrder => "out-of-order",
            Self::HeadMissing => "head-missing",
            Self::Tampered => "tampered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Valid,
            Self::SameSecondTies,
            Self::OutOfOrder,
            Self::HeadMissing,
            Self::Tampered,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whether the failure is only one of order, with every row's content intact.
    pub fn is_ordering_only(self) -> bool {
        matches!(self, Self::SameSecondTies | Self::OutOfOrder)
    }
}

/// The verification and its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub verification: Verification,
    pub class: ChainClass,
}

/// Verifies like DataStorage and, when that fails, tells ordering artefacts from breaks.
pub fn classify(rows: &[Row], key: Option<&HmacKey>) -> Result<Assessment, HashError> {
    let verification = verify(rows, key)?;
    if verification.is_valid() {
        return Ok(Assessment {
            verification,
            class: ChainClass::Valid,
        });
    }
    let mut hashed: Vec<&Row> = rows.iter().filter(|r| r.is_hashed()).collect();
    hashed.sort_by(|a, b| {
        (a.event_timestamp, a.event_id.as_str()).cmp(&(b.event_timestamp, b.event_id.as_str()))
    });
    // 1. Every row must authenticate under the previous hash it claims.
    for r in &hashed {
        let claimed = r.previous_event_hash.as_deref().unwrap_or_default();
        if r.compute_hash(claimed, key)? != r.event_hash.as_deref().unwrap_or_default() {
            return Ok(Assessment {
                verification,
                class: ChainClass::Tampered,
            });
        }
    }
    // 2. Every claimed previous hash is `""` (once) or a hash of this chain.
    let hashes: HashSet<&str> = hashed
        .iter()
        .filter_map(|r| r.event_hash.as_deref())
        .collect();
    let mut children: HashMap<&str, Vec<&Row>> = HashMap::new();
    let mut dangling = 0usize;
    for r in &hashed {
        let claimed = r.previous_event_hash.as_deref().unwrap_or_default();
        if !claimed.is_empty() && !hashes.contains(claimed) {
            dangling += 1;
        }
        children.entry(claimed).or_default().push(*r);
    }
    let roots = children.get("").map_or(0, Vec::len);
    let class = match (roots, dangling) {
        (1, 0) if reachable_from_root(&children) == hashed.len() => {
            // 3. One tree from `""` covering every row. kubernaut's writer links a new event to the
            //    newest row by (timestamp, event_id), or to the previous event of the same batch, so
            //    same-second ties give a tree whose links never go back in time; a link to a newer
            //    row means an event arrived after a newer one.
            let by_hash: HashMap<&str, &Row> = hashed
                .iter()
                .filter_map(|r| Some((r.event_hash.as_deref()?, *r)))
                .collect();
            let backwards = hashed.iter().any(|r| {
                r.previous_event_hash
                    .as_deref()
                    .and_then(|p| by_hash.get(p))
                    .is_some_and(|parent| parent.event_timestamp > r.event_timestamp)
            });
            if backwards {
                ChainClass::OutOfOrder
            } else {
                ChainClass::SameSecondTies
            }
        }
        (0, 1) => ChainClass::HeadMissing,
        _ => ChainClass::Tampered,
    };
    Ok(Assessment {
        verification,
        class,
    })
}

fn reachable_from_root(children: &HashMap<&str, Vec<&Row>>) -> usize {
    let mut stack = vec![""];
    let mut seen = HashSet::new();
    while let Some(h) = stack.pop() {
        for r in children.get(h).into_iter().flatten() {
            if seen.insert(r.event_id.as_str()) {
                stack.push(r.event_hash.as_deref().unwrap_or_default());
            }
        }
    }
    seen.len()
}

/// Re-links `rows` (all of one new chain, hashed ones in verifier order) under `correlation_id`:
/// sets the ID on every row and recomputes each hashed row's links with its own algorithm.
pub fn rechain(
    rows: &mut [Row],
    correlation_id: &str,
    key: Option<&HmacKey>,
) -> Result<String, HashError> {
    verifier_order(rows);
    let mut prev = String::new();
    for r in rows.iter_mut() {
        r.correlation_id = correlation_id.to_owned();
        if !r.is_hashed() {
            continue;
        }
        let h = r.compute_hash(&prev, key)?;
        r.previous_event_hash = Some(std::mem::replace(&mut prev, h.clone()));
        r.event_hash = Some(h);
    }
    Ok(prev)
}
