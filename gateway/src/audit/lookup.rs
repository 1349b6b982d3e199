//! The trail of one correlation ID (docs/audit.md): `GET /api/v1/audit/correlations/{id}` and
//! `namegate audit show <id>`.
//!
//! - Resolution: the rows whose `correlation_id` or `legacy_correlation_id` is the requested ID, plus —
//!   when the requested ID is a legacy one — every row of the new ID(s) its rows were migrated to, so a
//!   legacy ID shows the whole trail including events appended after the migration; a new ID finds its
//!   migrated rows through `correlation_id` directly.
//! - Order: oldest first by `(event_timestamp, seq)`; `seq` breaks ties (and orders events of one
//!   process exactly).
//! - Pagination: `limit` events per page (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]), fewer when
//!   the page's rows reach [`MAX_PAGE_BYTES`] (at least one event), and an opaque `cursor` naming the
//!   last event of the previous page (`next_cursor` of that page).
//! - Grouping: one RR name can span several RR objects over time (deleted and created again); events
//!   are grouped by `event_data.rr_uid` into consecutive runs. An event without an `rr_uid` (a
//!   `received` event precedes its decision) joins the group of the next event that has one; events
//!   after the last one that has one join the last group. Grouping is per page: a group cut by a page
//!   boundary continues, with the same `rr_uid`, at the top of the next page.
//! - kubernaut DataStorage as the store ([`datastorage_trail`]): the same response from DataStorage's
//!   query API, events oldest first by DataStorage's own order (`event_timestamp`, then `event_id`),
//!   `seq` being the event's position in the trail; the cursor names the next position and the last
//!   event returned, which must still be at its place when the next page is read. Legacy IDs resolve
//!   to themselves only: the legacy→new map is in DataStorage's database, not in its API.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Serialize;

use super::chain::format_timestamp;
use super::store::{AuditStore, Engine, RawEventRow, StoreError, StoredEvent};
use crate::http::problem::Problem;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// A page also ends once its rows hold this many bytes (at least one event per page), so a trail of
/// large events (each `event_data` may carry a 256 KiB signal) cannot make one lookup hold hundreds of
/// MB: memory per lookup is bounded by this plus one fetch chunk.
pub const MAX_PAGE_BYTES: usize = 4 << 20;
/// Rows fetched from the store at a time while filling a page.
const FETCH_CHUNK: u32 = 16;

/// One page of a correlation ID's trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrailPage {
    /// The ID asked for.
    pub correlation_id: String,
    /// Every ID searched: the requested one and the new IDs its legacy rows were migrated to.
    pub resolved_ids: Vec<String>,
    /// The events of this page, oldest first, in runs of one RR object.
    pub groups: Vec<RrGroup>,
    /// Events on this page.
    pub count: usize,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl TrailPage {
    /// The page's events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &StoredEvent> {
        self.groups.iter().flat_map(|g| g.events.iter())
    }
}

/// Consecutive events about one RR object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RrGroup {
    /// `event_data.rr_uid`; absent when no event of the run names one (e.g. rejected signals).
    pub rr_uid: Option<String>,
    pub events: Vec<StoredEvent>,
}

/// A page of the trail of `id` (new or legacy format), after `cursor`, at most `limit` events
/// (0 = [`DEFAULT_LIMIT`]; clamped to [`MAX_LIMIT`]). A malformed cursor is
/// [`StoreError::InvalidArgument`].
pub async fn correlation_trail(
    store: &AuditStore,
    id: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<TrailPage, StoreError> {
    let limit = match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    if store.engine() == Engine::DataStorage {
        return datastorage_trail(store, id, cursor, limit).await;
    }
    let after = cursor.map(Cursor::parse).transpose()?;
    let mut resolved_ids = vec![id.to_owned()];
    for new_id in store.correlation_ids_for_legacy(id).await? {
        if !resolved_ids.contains(&new_id) {
            resolved_ids.push(new_id);
        }
    }
    let (rows, more) = fetch_page(store, &resolved_ids, after, limit, MAX_PAGE_BYTES).await?;
    let next_cursor = match rows.last() {
        Some(last) if more => Some(Cursor::after(last).encode()),
        _ => None,
    };
    let events = rows
        .iter()
        .map(RawEventRow::to_stored)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrailPage {
        correlation_id: id.to_owned(),
        resolved_ids,
        count: events.len(),
        groups: group_by_rr(events),
        next_cursor,
    })
}

/// [`correlation_trail`] when kubernaut DataStorage is the store: the same page, read in chunks of
/// [`FETCH_CHUNK`] events through [`AuditStore::datastorage_slice`], bounded by `limit` and
/// [`MAX_PAGE_BYTES`] like the other stores.
async fn datastorage_trail(
    store: &AuditStore,
    id: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<TrailPage, StoreError> {
    let after = cursor.map(DsCursor::parse).transpose()?;
    let mut events: Vec<StoredEvent> = Vec::new();
    let mut bytes = 0usize;
    let mut next = after.as_ref().map_or(0, |c| c.next);
    let mut expect = after.as_ref().map(|c| c.last);
    let mut total = None;
    let full = loop {
        let want = (limit as usize - events.len()).min(FETCH_CHUNK as usize);
        // One event of overlap: the last one returned must still be where it was.
        let overlap = u64::from(expect.is_some() && next > 0);
        let Some((chunk, t)) = store
            .datastorage_slice(id, next - overlap, want + overlap as usize, total)
            .await?
        else {
            return Err(StoreError::NotSupported("the DataStorage trail"));
        };
        total = Some(t);
        let mut chunk = chunk.into_iter();
        if let Some(last) = expect
            && chunk.next().map(|e| e.event_id) != Some(last)
        {
            return Err(if events.is_empty() {
                StoreError::InvalidArgument(format!(
                    "cursor {:?}: DataStorage's trail changed before it (events inserted before the cursor's event, or purged); start again without a cursor",
                    cursor.unwrap_or_default()
                ))
            } else {
                StoreError::Http {
                    reason: "DataStorage's trail changed while it was read".into(),
                    retry_after: None,
                }
            });
        }
        let mut got = 0;
        for ev in chunk {
            let size = stored_bytes(&ev);
            if !events.is_empty() && bytes + size > MAX_PAGE_BYTES {
                break;
            }
            bytes += size;
            next += 1;
            got += 1;
            expect = Some(ev.event_id);
            events.push(ev);
        }
        if next >= t {
            break false;
        }
        if events.len() >= limit as usize || got < want {
            break true;
        }
    };
    let next_cursor = match events.last() {
        Some(last) if full => Some(
            DsCursor {
                next,
                last: last.event_id,
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(TrailPage {
        correlation_id: id.to_owned(),
        resolved_ids: vec![id.to_owned()],
        count: events.len(),
        groups: group_by_rr(events),
        next_cursor,
    })
}

/// Bytes an event takes in a page (see [`row_bytes`]).
fn stored_bytes(e: &StoredEvent) -> usize {
    let opt = |v: &Option<String>| v.as_ref().map_or(0, String::len);
    256 + e.event_data.to_string().len()
        + e.correlation_id.len()
        + opt(&e.error_message)
        + opt(&e.actor_id)
        + opt(&e.resource_id)
        + opt(&e.fingerprint)
}

/// A DataStorage page position: the next event's position in the trail and the ID of the event
/// before it, written `ds~<next>~<event id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DsCursor {
    next: u64,
    last: uuid::Uuid,
}

impl DsCursor {
    fn encode(&self) -> String {
        format!("ds~{}~{}", self.next, self.last.hyphenated())
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        let invalid = || {
            StoreError::InvalidArgument(format!("cursor {s:?} is not a cursor this API returned"))
        };
        let mut parts = s.split('~');
        if parts.next() != Some("ds") {
            return Err(invalid());
        }
        let next: u64 = parts
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(invalid)?;
        let last = parts
            .next()
            .and_then(|u| uuid::Uuid::parse_str(u).ok())
            .ok_or_else(invalid)?;
        if next == 0 || parts.next().is_some() || s != (Self { next, last }).encode() {
            return Err(invalid());
        }
        Ok(Self { next, last })
    }
}

/// Up to `limit` rows after `after`, in chunks, stopping early once they hold `max_bytes` (at least one
/// row); and whether more rows follow.
async fn fetch_page(
    store: &AuditStore,
    ids: &[String],
    after: Option<Cursor>,
    limit: u32,
    max_bytes: usize,
) -> Result<(Vec<RawEventRow>, bool), StoreError> {
    let mut rows: Vec<RawEventRow> = Vec::new();
    let mut bytes = 0usize;
    let mut position = after;
    loop {
        let want = (limit as usize - rows.len()).min(FETCH_CHUNK as usize) as u32;
        // One more than asked: tells whether anything follows.
        let chunk = store
            .rows_by_time(
                ids,
                position.as_ref().map(|c| (c.timestamp.as_str(), c.seq)),
                want + 1,
            )
            .await?;
        let exhausted = chunk.len() <= want as usize;
        for row in chunk.into_iter().take(want as usize) {
            if !rows.is_empty() && bytes + row_bytes(&row) > max_bytes {
                return Ok((rows, true));
            }
            bytes += row_bytes(&row);
            rows.push(row);
        }
        if exhausted {
            return Ok((rows, false));
        }
        if rows.len() >= limit as usize {
            return Ok((rows, true));
        }
        position = rows.last().map(Cursor::after);
    }
}

/// Bytes a row takes in a page (its text columns; the JSON answer is of the same order).
fn row_bytes(r: &RawEventRow) -> usize {
    let opt = |v: &Option<String>| v.as_ref().map_or(0, String::len);
    256 + r.event_data.len()
        + r.correlation_id.len()
        + opt(&r.error_message)
        + opt(&r.actor_id)
        + opt(&r.resource_id)
        + opt(&r.legacy_correlation_id)
        + opt(&r.fingerprint)
}

/// Consecutive runs by `rr_uid` (see the module docs for events without one).
pub fn group_by_rr(events: Vec<StoredEvent>) -> Vec<RrGroup> {
    let mut groups: Vec<RrGroup> = Vec::new();
    let mut waiting: Vec<StoredEvent> = Vec::new();
    for ev in events {
        let Some(uid) = ev.rr_uid().map(str::to_owned) else {
            waiting.push(ev);
            continue;
        };
        match groups.last_mut() {
            Some(last) if last.rr_uid.as_deref() == Some(uid.as_str()) => {
                last.events.append(&mut waiting);
                last.events.push(ev);
            }
            _ => {
                let mut events = std::mem::take(&mut waiting);
                events.push(ev);
                groups.push(RrGroup {
                    rr_uid: Some(uid),
                    events,
                });
            }
        }
    }
    if !waiting.is_empty() {
        match groups.last_mut() {
            Some(last) => last.events.append(&mut waiting),
            None => groups.push(RrGroup {
                rr_uid: None,
                events: waiting,
            }),
        }
    }
    groups
}

/// The position after one event: its stored timestamp and seq, written `<timestamp>~<seq>`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    timestamp: String,
    seq: i64,
}

impl Cursor {
    fn after(row: &RawEventRow) -> Self {
        Self {
            timestamp: row.event_timestamp.clone(),
            seq: row.seq,
        }
    }

    fn encode(&self) -> String {
        format!("{}~{}", self.timestamp, self.seq)
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        let invalid = || {
            StoreError::InvalidArgument(format!("cursor {s:?} is not a cursor this API returned"))
        };
        let (ts, seq) = s.split_once('~').ok_or_else(invalid)?;
        let parsed: Timestamp = ts.parse().map_err(|_| invalid())?;
        // Only the exact stored form: it is compared as text on SQLite.
        if format_timestamp(parsed) != ts {
            return Err(invalid());
        }
        let seq: i64 = seq.parse().map_err(|_| invalid())?;
        if seq < 0 {
            return Err(invalid());
        }
        Ok(Self {
            timestamp: ts.to_owned(),
            seq,
        })
    }
}

/// `GET /api/v1/audit/correlations/{id}?limit=&cursor=` → [`TrailPage`] as JSON. 404 when the ID has no
/// events at all, 400 for a bad `limit`/`cursor`, 503 + `Retry-After` while the store is unreachable.
/// Authentication and authorisation are the enclosing router's layers.
pub fn router(store: AuditStore) -> Router {
    Router::new()
        .route("/api/v1/audit/correlations/{id}", get(get_trail))
        .with_state(store)
}

async fn get_trail(
    State(store): State<AuditStore>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let limit = match params.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Problem::invalid(format!("limit: expected an integer from 1 to {MAX_LIMIT}"))
                .into_response();
        }
    };
    let cursor = params.get("cursor").map(String::as_str);
    match correlation_trail(&store, &id, cursor, limit).await {
        Ok(page) if page.count == 0 && cursor.is_none() => Problem::not_found().into_response(),
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => lookup_problem(&e).into_response(),
    }
}

/// How a failed lookup answers (docs/audit.md, "Lookups"): the caller's input → 400; the store (or
/// DataStorage) unreachable, overloaded or failing → 503 + `Retry-After` (DataStorage's own when it
/// sent one); DataStorage refusing namegate's credentials, or answering unusably → 502 with a problem
/// type of its own (an operator must act; retrying does not help); only namegate's own faults → 500.
pub fn lookup_problem(e: &StoreError) -> Problem {
    match e {
        e if e.is_invalid_input() => Problem::invalid(e.to_string()),
        e if e.is_credentials_refused() => {
            tracing::error!(error = %e, "audit lookup: DataStorage refused namegate's credentials");
            Problem {
                status: axum::http::StatusCode::BAD_GATEWAY,
                kind: "audit-store-credentials-refused",
                title: "Audit store refused the gateway's credentials",
                detail: "kubernaut DataStorage refused namegate's ServiceAccount token or its RBAC; an operator must fix the audit token or its permissions".into(),
                retry_after: None,
            }
        }
        e if e.is_retryable() => {
            tracing::warn!(error = %e, "audit lookup: store unavailable");
            Problem::unavailable(
                "the audit store is unavailable; retry later",
                e.retry_after().unwrap_or(std::time::Duration::from_secs(5)),
            )
        }
        e if e.is_bad_answer() => {
            tracing::error!(error = %e, "audit lookup: unusable answer from DataStorage");
            Problem {
                status: axum::http::StatusCode::BAD_GATEWAY,
                kind: "audit-store-bad-answer",
                title: "Audit store answered unusably",
                detail: "kubernaut DataStorage's answer to the audit query could not be used; see the gateway's log".into(),
                retry_after: None,
            }
        }
        e => {
            tracing::error!(error = %e, "audit lookup failed");
            Problem::internal("the audit lookup failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: i64, uid: Option<&str>) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: uuid::Uuid::now_v7(),
            event_version: "1.0".into(),
            event_timestamp: Timestamp::UNIX_EPOCH,
            event_type: "gateway.signal.received".into(),
            event_category: "gateway".into(),
            event_action: "received".into(),
            event_outcome: "success".into(),
            correlation_id: "rr-x".into(),
            legacy_correlation_id: None,
            fingerprint: None,
            parent_event_id: None,
            actor_type: None,
            actor_id: None,
            resource_type: None,
            resource_id: None,
            namespace: None,
            cluster_id: None,
            trace_id: None,
            span_id: None,
            severity: None,
            duration_ms: None,
            error_code: None,
            error_message: None,
            event_data: match uid {
                Some(u) => json!({ "rr_uid": u }),
                None => json!({}),
            },
            event_hash: String::new(),
            previous_event_hash: None,
            hash_algorithm: "sha256".into(),
        }
    }

    fn shape(groups: &[RrGroup]) -> Vec<(Option<&str>, Vec<i64>)> {
        groups
            .iter()
            .map(|g| {
                (
                    g.rr_uid.as_deref(),
                    g.events.iter().map(|e| e.seq).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn groups_runs_and_attaches_uidless_events_forward() {
        let groups = group_by_rr(vec![
            ev(1, None),
            ev(2, Some("a")),
            ev(3, None),
            ev(4, Some("a")),
            ev(5, None),
            ev(6, Some("b")),
            ev(7, None),
        ]);
        assert_eq!(
            shape(&groups),
            vec![(Some("a"), vec![1, 2, 3, 4]), (Some("b"), vec![5, 6, 7])]
        );
        assert_eq!(
            shape(&group_by_rr(vec![ev(1, None), ev(2, None)])),
            vec![(None, vec![1, 2])]
        );
        assert!(group_by_rr(Vec::new()).is_empty());
    }

    #[test]
    fn datastorage_cursors_round_trip_and_reject_garbage() {
        let c = DsCursor {
            next: 17,
            last: uuid::Uuid::from_u128(0xabcd_ef01_2345_4678_9abc_def0_1234_5678),
        };
        assert_eq!(DsCursor::parse(&c.encode()).unwrap(), c);
        let id = c.last.hyphenated().to_string();
        for bad in [
            String::new(),
            "ds".into(),
            format!("ds~0~{id}"),
            format!("ds~-1~{id}"),
            format!("ds~017~{id}"),
            format!("ds~17~{}", id.to_uppercase()),
            format!("ds~17~{id}~x"),
            "2025-01-17T18:32:01.123456Z~17".to_owned(),
        ] {
            let e = DsCursor::parse(&bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
        }
        // The SQL stores' cursors are not DataStorage's and vice versa.
        assert!(Cursor::parse(&c.encode()).is_err());
    }

    #[test]
    fn upstream_conditions_never_answer_500() {
        use axum::http::StatusCode;
        let refused = StoreError::CredentialsRefused {
            status: 403,
            reason: "denied".into(),
        };
        let p = lookup_problem(&refused);
        assert_eq!(
            (p.status, p.kind),
            (StatusCode::BAD_GATEWAY, "audit-store-credentials-refused")
        );
        assert!(
            !p.detail.contains("denied"),
            "upstream text stays in the log"
        );
        let throttled = StoreError::Http {
            reason: "429".into(),
            retry_after: Some(std::time::Duration::from_secs(9)),
        };
        let p = lookup_problem(&throttled);
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.retry_after, Some(std::time::Duration::from_secs(9)));
        let p = lookup_problem(&StoreError::BadAnswer("x".into()));
        assert_eq!(p.status, StatusCode::BAD_GATEWAY);
        let p = lookup_problem(&StoreError::InvalidArgument("cursor".into()));
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            timestamp: "2025-01-17T18:32:01.123456Z".into(),
            seq: 42,
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "42",
            "x~1",
            "2025-01-17T18:32:01Z~1",
            "2025-01-17T18:32:01.123456Z~-1",
            "2025-01-17T18:32:01.123456Z~a",
        ] {
            let e = Cursor::parse(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
        }
    }
}
