//! kubernaut DataStorage as the audit store (`--audit-url http(s)://…`; docs/audit.md, "kubernaut
//! DataStorage as the store").
//!
//! Batches go to `POST /api/v1/audit/events/batch` as `AuditEventRequest`s
//! ([`crate::audit::datastorage::to_request`]) with the ServiceAccount token, read from its file on
//! every request (projected tokens rotate). Status codes map onto the writer's behaviour through
//! [`StoreError`]: 2xx stored; 400 refused (one event: [`StoreError::InvalidEvent`], so the writer keeps
//! it in the rejected file; several: [`StoreError::Refused`], so the writer isolates it event by event);
//! 401/403, 429, 503, other 5xx and transport errors unavailable (→ retry, spill), with the server's
//! `Retry-After` when it sent one.
//!
//! Lookups read `GET /api/v1/audit/events?correlation_id=&limit=&offset=` ([`Client::ascending`]):
//! DataStorage answers newest first (`event_timestamp DESC, event_id DESC`) with offset paging and the
//! trail's `total`, so a slice counted from the oldest event is read at offset `total - start - n` and
//! reversed. Answers: 401/403 [`StoreError::CredentialsRefused`]; 429, 5xx and transport errors
//! unavailable (with `Retry-After`); anything else unusable [`StoreError::BadAnswer`].
//!
//! DataStorage assigns `event_id` itself, so a resent batch cannot be recognised by ID. After a send
//! whose outcome is unknown (timeout, connection lost after the request went out, 5xx other than 503)
//! the next append first asks `GET /api/v1/audit/events?correlation_id=` and skips events already stored
//! with the same `event_type` and `event_timestamp` (microseconds).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use super::{AppendReport, StoreConfig, StoreError, StoredEvent};
use crate::audit::chain::truncate_to_micros;
use crate::audit::datastorage::{accepts, to_request};
use crate::audit::event::AuditEvent;

/// DataStorage's limits for one batch request (`server.maxBatchSize`, body limit).
pub const MAX_BATCH_EVENTS: usize = 500;
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Page size of the duplicate check's queries.
const QUERY_LIMIT: usize = 1000;
/// The duplicate check reads at most this many pages per correlation ID.
const QUERY_MAX_PAGES: usize = 20;
/// DataStorage's largest page (`limit` 1–1000).
pub const MAX_QUERY_LIMIT: usize = 1000;
/// A query answer larger than this is refused unread (a lookup reads at most 17 events per request,
/// each `event_data` at most 256 KiB in DataStorage).
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// How often a slice is re-read when the trail grew between two answers.
const SLICE_ATTEMPTS: usize = 4;

/// One answer of DataStorage's query endpoint.
#[derive(Debug)]
pub(super) struct QueryPage {
    pub rows: Vec<Value>,
    /// `pagination.total`: events matching the query.
    pub total: u64,
    /// `pagination.has_more`.
    pub has_more: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token_file: PathBuf,
    /// A send's outcome is unknown: the next append checks what DataStorage already holds.
    uncertain: Arc<AtomicBool>,
}

pub(super) fn connect(config: &StoreConfig) -> Result<Client, StoreError> {
    // reqwest is built without a bundled crypto provider; use the one kube's client uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(config.acquire_timeout)
        .build()
        .map_err(|e| StoreError::InvalidArgument(format!("HTTP client for DataStorage: {e}")))?;
    Ok(Client {
        http,
        base: config.url.trim_end_matches('/').to_owned(),
        token_file: config
            .token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_AUDIT_TOKEN_FILE)),
        uncertain: Arc::new(AtomicBool::new(false)),
    })
}

fn unavailable(reason: impl Into<String>) -> StoreError {
    StoreError::Http {
        reason: reason.into(),
        retry_after: None,
    }
}

impl Client {
    fn token(&self) -> Result<String, StoreError> {
        // Re-read every time: the kubelet rotates projected tokens in place.
        let raw = std::fs::read_to_string(&self.token_file).map_err(|e| {
            unavailable(format!(
                "cannot read the DataStorage token file {}: {e}",
                self.token_file.display()
            ))
        })?;
        Ok(raw.trim().to_owned())
    }

    /// An authenticated query answers: DataStorage is up and takes our token.
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.query_page("namegate-probe", 1, 0).await.map(|_| ())
    }

    pub(super) async fn append(&self, events: &[AuditEvent]) -> Result<AppendReport, StoreError> {
        let mut report = AppendReport::default();
        let mut send: Vec<&AuditEvent> = Vec::with_capacity(events.len());
        for ev in events {
            if accepts(ev.event_type) {
                send.push(ev);
            } else {
                // DataStorage's schema has no payload for namegate's own types; they stay in the log.
                report.local_only += 1;
                tracing::info!(target: "namegate::audit::local_only",
                    event = %serde_json::to_string(ev).unwrap_or_default(),
                    "audit event DataStorage does not accept; kept in the log only");
            }
        }
        if self.uncertain.load(Ordering::SeqCst) {
            let before = send.len();
            send = self.without_stored(send).await?;
            report.duplicates += (before - send.len()) as u64;
        }
        let mut start = 0;
        while start < send.len() {
            let mut bodies = Vec::new();
            let mut bytes = 2;
            let mut end = start;
            while end < send.len() && end - start < MAX_BATCH_EVENTS {
                let body = serde_json::to_vec(&to_request(send[end]))
                    .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
                if end > start && bytes + body.len() + 1 > MAX_BATCH_BYTES {
                    break;
                }
                bytes += body.len() + 1;
                bodies.push(body);
                end += 1;
            }
            self.post(&send[start..end], bodies).await?;
            report.inserted += (end - start) as u64;
            start = end;
        }
        self.uncertain.store(false, Ordering::SeqCst);
        Ok(report)
    }

    async fn post(&self, events: &[&AuditEvent], bodies: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let mut body = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, b) in bodies.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b);
        }
        body.push(b']');
        let token = self.token()?;
        // Until DataStorage answers definitively, this send may or may not have been stored (also
        // when the writer's timeout drops this future).
        let was_uncertain = self.uncertain.swap(true, Ordering::SeqCst);
        let sent = self
            .http
            .post(format!("{}/api/v1/audit/events/batch", self.base))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                if e.is_connect() {
                    // Never reached the server.
                    self.uncertain.store(was_uncertain, Ordering::SeqCst);
                }
                return Err(unavailable(format!("DataStorage batch request: {e}")));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        if resp.status().is_success() {
            return Ok(());
        }
        let detail = problem_detail(resp.text().await.unwrap_or_default());
        let definitive = matches!(status, 400..=499 | 503);
        if definitive {
            self.uncertain.store(was_uncertain, Ordering::SeqCst);
        }
        Err(match status {
            400 if events.len() == 1 => StoreError::InvalidEvent {
                event_id: events[0].event_id,
                reason: format!("DataStorage refused the event (400): {detail}"),
            },
            429 | 503 => StoreError::Http {
                reason: format!("DataStorage answered {status}: {detail}"),
                retry_after,
            },
            401 | 403 => StoreError::Http {
                reason: format!(
                    "DataStorage refused the credentials ({status}; check the token file {} and the ServiceAccount's RBAC): {detail}",
                    self.token_file.display()
                ),
                retry_after,
            },
            408 | 500..=599 => StoreError::Http {
                reason: format!("DataStorage answered {status}: {detail}"),
                retry_after,
            },
            _ => StoreError::Refused { status, detail },
        })
    }

    /// `send` without the events DataStorage already holds (same correlation ID, type and timestamp in
    /// microseconds; each stored row matches one event at most).
    async fn without_stored<'e>(
        &self,
        send: Vec<&'e AuditEvent>,
    ) -> Result<Vec<&'e AuditEvent>, StoreError> {
        let mut stored: HashMap<(String, String, i128), usize> = HashMap::new();
        let mut ids: Vec<&str> = send.iter().map(|e| e.correlation_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            for page in 0..QUERY_MAX_PAGES {
                let QueryPage {
                    rows,
                    has_more: more,
                    ..
                } = self.query_page(id, QUERY_LIMIT, page * QUERY_LIMIT).await?;
                for row in rows {
                    if let Some(key) = row_key(&row) {
                        *stored.entry(key).or_default() += 1;
                    }
                }
                if !more {
                    break;
                }
            }
        }
        Ok(send
            .into_iter()
            .filter(|ev| {
                let key = (
                    ev.correlation_id.clone(),
                    ev.event_type.as_str().to_owned(),
                    truncate_to_micros(ev.event_timestamp).as_microsecond() as i128,
                );
                match stored.get_mut(&key) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        tracing::info!(event_id = %ev.event_id, correlation_id = %ev.correlation_id,
                            "audit event already in DataStorage (acknowledgement lost); not sent again");
                        false
                    }
                    _ => true,
                }
            })
            .collect())
    }

    /// One page of `GET /api/v1/audit/events?correlation_id=` (newest first).
    pub(super) async fn query_page(
        &self,
        correlation_id: &str,
        limit: usize,
        offset: usize,
    ) -> Result<QueryPage, StoreError> {
        let token = self.token()?;
        let mut resp = self
            .http
            .get(format!("{}/api/v1/audit/events", self.base))
            .query(&[
                ("correlation_id", correlation_id),
                ("limit", &limit.to_string()),
                ("offset", &offset.to_string()),
            ])
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable(format!("DataStorage query: {e}")))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| unavailable(format!("DataStorage query: {e}")))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(StoreError::BadAnswer(format!(
                    "the answer exceeds {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(StoreError::CredentialsRefused {
                    status,
                    reason: format!(
                        "{} (check the token file {} and that its ServiceAccount may get services/data-storage-service in DataStorage's namespace)",
                        problem_detail(text),
                        self.token_file.display()
                    ),
                });
            }
            408 | 429 | 500..=599 => {
                return Err(StoreError::Http {
                    reason: format!(
                        "DataStorage query answered {status}: {}",
                        problem_detail(text)
                    ),
                    retry_after,
                });
            }
            _ => {
                return Err(StoreError::BadAnswer(format!(
                    "status {status}: {}",
                    problem_detail(text)
                )));
            }
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| StoreError::BadAnswer(format!("not JSON: {e}")))?;
        let rows = match body.get("data") {
            Some(Value::Array(rows)) => rows.clone(),
            // Go encodes an empty slice as null when it was never allocated.
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(StoreError::BadAnswer("`data` is not an array".into())),
        };
        let total = body
            .pointer("/pagination/total")
            .and_then(Value::as_u64)
            .ok_or_else(|| StoreError::BadAnswer("no `pagination.total`".into()))?;
        let has_more = body
            .pointer("/pagination/has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(QueryPage {
            rows,
            total,
            has_more,
        })
    }

    /// The events at positions `[start, start + n)` of `correlation_id`'s trail counted from its
    /// oldest event (`n` at most [`MAX_QUERY_LIMIT`]), oldest first, and the trail's length.
    ///
    /// DataStorage pages newest first, so the slice is read at offset `total - start - n`; `total`
    /// is the length the caller last saw (`None`: asked first, with a one-event query). Events
    /// appended meanwhile change the answer's `total`: the slice is read again at the new offset,
    /// at most [`SLICE_ATTEMPTS`] times, then the store counts as unavailable (retry later).
    /// `seq` of each event is its position + 1 (DataStorage has no sequence column).
    pub(super) async fn ascending(
        &self,
        correlation_id: &str,
        start: u64,
        n: usize,
        total: Option<u64>,
    ) -> Result<(Vec<StoredEvent>, u64), StoreError> {
        let n = n.clamp(1, MAX_QUERY_LIMIT) as u64;
        let mut total = match total {
            Some(t) => t,
            None => self.query_page(correlation_id, 1, 0).await?.total,
        };
        for _ in 0..SLICE_ATTEMPTS {
            if start >= total {
                return Ok((Vec::new(), total));
            }
            let want = n.min(total - start);
            let offset = total - start - want;
            let page = self
                .query_page(correlation_id, want as usize, offset as usize)
                .await?;
            if page.total != total {
                total = page.total;
                continue;
            }
            if page.rows.len() as u64 != want {
                return Err(StoreError::BadAnswer(format!(
                    "{} events at offset {offset} of {total}, expected {want}",
                    page.rows.len()
                )));
            }
            let events = page
                .rows
                .iter()
                .rev()
                .enumerate()
                .map(|(i, row)| stored_event(row, start + i as u64 + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((events, total));
        }
        Err(unavailable(format!(
            "the trail of {correlation_id:?} grew on each of {SLICE_ATTEMPTS} reads; retry"
        )))
    }
}

/// One row of DataStorage's query answer (`AuditEvent`: `AuditEventRequest` plus `event_id`,
/// `event_date`, `event_hash`, `previous_event_hash`, legal hold) as namegate's [`StoredEvent`].
/// Not in DataStorage's answer, so empty: `trace_id`, `span_id`, `legacy_correlation_id`,
/// `hash_algorithm` (unless a DataStorage version sends it). `fingerprint` is `event_data.fingerprint`
/// (where kubernaut's gateway payload carries it). docs/audit.md lists the mapping.
fn stored_event(row: &Value, seq: u64) -> Result<StoredEvent, StoreError> {
    let bad = |what: &str| StoreError::BadAnswer(format!("event at position {seq}: {what}"));
    let text = |key: &str| -> Option<String> {
        row.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let required = |key: &str| text(key).ok_or_else(|| bad(&format!("no `{key}`")));
    let event_id = uuid::Uuid::parse_str(&required("event_id")?)
        .map_err(|e| bad(&format!("event_id: {e}")))?;
    let event_timestamp: Timestamp = required("event_timestamp")?
        .parse()
        .map_err(|e| bad(&format!("event_timestamp: {e}")))?;
    let parent_event_id = match text("parent_event_id") {
        Some(p) => {
            Some(uuid::Uuid::parse_str(&p).map_err(|e| bad(&format!("parent_event_id: {e}")))?)
        }
        None => None,
    };
    let event_data = row.get("event_data").cloned().unwrap_or(Value::Null);
    let fingerprint = event_data
        .get("fingerprint")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(StoredEvent {
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
        event_id,
        event_version: text("version").unwrap_or_default(),
        event_timestamp: truncate_to_micros(event_timestamp),
        event_type: required("event_type")?,
        event_category: text("event_category").unwrap_or_default(),
        event_action: text("event_action").unwrap_or_default(),
        event_outcome: text("event_outcome").unwrap_or_default(),
        correlation_id: required("correlation_id")?,
        legacy_correlation_id: None,
        fingerprint,
        parent_event_id,
        actor_type: text("actor_type"),
        actor_id: text("actor_id"),
        resource_type: text("resource_type"),
        resource_id: text("resource_id"),
        namespace: text("namespace"),
        cluster_id: text("cluster_id"),
        trace_id: None,
        span_id: None,
        severity: text("severity"),
        duration_ms: row.get("duration_ms").and_then(Value::as_i64),
        error_code: text("error_code"),
        error_message: text("error_message"),
        event_data,
        event_hash: text("event_hash").unwrap_or_default(),
        previous_event_hash: text("previous_event_hash"),
        hash_algorithm: text("hash_algorithm").unwrap_or_default(),
    })
}

fn row_key(row: &Value) -> Option<(String, String, i128)> {
    let cid = row.get("correlation_id")?.as_str()?.to_owned();
    let ty = row.get("event_type")?.as_str()?.to_owned();
    let ts: Timestamp = row.get("event_timestamp")?.as_str()?.parse().ok()?;
    Some((cid, ty, truncate_to_micros(ts).as_microsecond() as i128))
}

/// `Retry-After` in seconds (DataStorage and most proxies send seconds; an HTTP date is ignored and the
/// writer's own backoff applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The RFC 7807 `detail` (else `title`) of an error body, else the body itself (cut to 1 KiB).
fn problem_detail(text: String) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(&text)
        && let Some(d) = v
            .get("detail")
            .or_else(|| v.get("title"))
            .and_then(Value::as_str)
    {
        return d.to_owned();
    }
    let mut text = text;
    if text.len() > 1024 {
        let mut cut = 1024;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn problem_detail_prefers_detail() {
        assert_eq!(
            problem_detail(r#"{"title":"Bad","detail":"event_data.x is required"}"#.into()),
            "event_data.x is required"
        );
        assert_eq!(problem_detail(r#"{"title":"Bad"}"#.into()), "Bad");
        assert_eq!(problem_detail("plain".into()), "plain");
    }
}
