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

use super::{AppendReport, StoreConfig, StoreError};
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
                let (rows, more) = self.query_page(id, QUERY_LIMIT, page * QUERY_LIMIT).await?;
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

    /// One page of `GET /api/v1/audit/events?correlation_id=`: the rows and whether more follow.
    pub(super) async fn query_page(
        &self,
        correlation_id: &str,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Value>, bool), StoreError> {
        let token = self.token()?;
        let resp = self
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
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| unavailable(format!("DataStorage query: {e}")))?;
        if !status.is_success() {
            return Err(StoreError::Http {
                reason: format!(
                    "DataStorage query answered {}: {}",
                    status.as_u16(),
                    problem_detail(text)
                ),
                retry_after,
            });
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| unavailable(format!("DataStorage query: unreadable answer: {e}")))?;
        let rows = body
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let more = body
            .pointer("/pagination/has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok((rows, more))
    }
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
