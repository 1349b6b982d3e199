//! Replay and freshness checks (docs/api.md).
//!
//! A captured webhook replayed later must not open a new remediation, and a clock far ahead is a
//! sign of a forged or broken sender. The rules:
//!
//! - Alertmanager with `X-Timestamp` (unix seconds, sent by direct API clients): the header must
//!   parse and lie within [`FreshnessConfig::past`] before and [`FreshnessConfig::future`] after
//!   `now`, edges included.
//! - Alertmanager without the header (Alertmanager itself cannot set custom headers): the newest
//!   `startsAt` among the batch's firing alerts must not be more than `future` ahead of `now`. Old
//!   `startsAt` values are fine: an alert that has fired for a day is legitimately re-sent every
//!   `repeat_interval`.
//! - Kubernetes Events: the newest of `series.lastObservedTime`, `lastTimestamp`,
//!   `deprecatedLastTimestamp` and `eventTime` must be at most [`FreshnessConfig::event_max_age`]
//!   old and at most `future` ahead. An Event with none of them is refused: its freshness cannot
//!   be judged.
//!
//! Every failure is a [`RequestError::Freshness`] (400) naming the header or field.

use jiff::{SignedDuration, Timestamp};

use super::RequestError;
use super::limits::quote;

/// The replay windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreshnessConfig {
    /// How far in the past an `X-Timestamp` may be (default 5 min).
    pub past: SignedDuration,
    /// How far in the future an `X-Timestamp`, a `startsAt` or an Event time may be (default 2 min).
    pub future: SignedDuration,
    /// How old a Kubernetes Event's latest observation may be (default 5 min).
    pub event_max_age: SignedDuration,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        Self {
            past: SignedDuration::from_mins(5),
            future: SignedDuration::from_mins(2),
            event_max_age: SignedDuration::from_mins(5),
        }
    }
}

/// The header that carries the sender's clock.
pub const X_TIMESTAMP: &str = "X-Timestamp";

/// Parses `X-Timestamp` (decimal unix seconds) and checks it against the window around `now`.
pub fn check_x_timestamp(
    header: &str,
    now: Timestamp,
    cfg: &FreshnessConfig,
) -> Result<Timestamp, RequestError> {
    let trimmed = header.trim();
    let seconds: i64 = trimmed
        .parse()
        .ok()
        .filter(|_| !trimmed.starts_with('+'))
        .ok_or_else(|| {
            RequestError::freshness(
                X_TIMESTAMP,
                format!("{} is not a unix time in seconds", quote(header)),
            )
        })?;
    let sent = Timestamp::from_second(seconds).map_err(|_| {
        RequestError::freshness(
            X_TIMESTAMP,
            format!("{seconds} is out of the representable range"),
        )
    })?;
    check_window(X_TIMESTAMP, sent, now, cfg.past, cfg.future)?;
    Ok(sent)
}

/// Checks that the newest firing `startsAt` of a batch is not too far in the future.
pub fn check_starts_at(
    field: &(impl std::fmt::Display + ?Sized),
    starts_at: Timestamp,
    now: Timestamp,
    cfg: &FreshnessConfig,
) -> Result<(), RequestError> {
    if starts_at.duration_since(now) > cfg.future {
        return Err(RequestError::freshness(
            field.to_string(),
            format!(
                "{starts_at} is {} ahead of the gateway clock ({now}); at most {} is allowed",
                fmt_duration(starts_at.duration_since(now)),
                fmt_duration(cfg.future),
            ),
        ));
    }
    Ok(())
}

/// Checks a Kubernetes Event's latest observation time.
pub fn check_event_time(
    field: &str,
    observed: Timestamp,
    now: Timestamp,
    cfg: &FreshnessConfig,
) -> Result<(), RequestError> {
    check_window(field, observed, now, cfg.event_max_age, cfg.future)
}

fn check_window(
    field: &str,
    at: Timestamp,
    now: Timestamp,
    past: SignedDuration,
    future: SignedDuration,
) -> Result<(), RequestError> {
    let ahead = at.duration_since(now);
    if ahead > future {
        return Err(RequestError::freshness(
            field,
            format!(
                "{at} is {} ahead of the gateway clock ({now}); at most {} is allowed",
                fmt_duration(ahead),
                fmt_duration(future)
            ),
        ));
    }
    let age = now.duration_since(at);
    if age > past {
        return Err(RequestError::freshness(
            field,
            format!(
                "{at} is {} old (gateway clock {now}); at most {} is allowed (stale or replayed)",
                fmt_duration(age),
                fmt_duration(past)
            ),
        ));
    }
    Ok(())
}

/// `1h2m3s`-style text, to the second.
fn fmt_duration(d: SignedDuration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-26T17:00:00Z".parse().unwrap()
    }

    fn header(offset_secs: i64) -> String {
        (now().as_second() + offset_secs).to_string()
    }

    #[test]
    fn x_timestamp_window_edges_are_inclusive() {
        let cfg = FreshnessConfig::default();
        assert!(check_x_timestamp(&header(0), now(), &cfg).is_ok());
        assert!(check_x_timestamp(&header(-300), now(), &cfg).is_ok());
        assert!(check_x_timestamp(&header(120), now(), &cfg).is_ok());

        let old = check_x_timestamp(&header(-301), now(), &cfg).unwrap_err();
        assert!(old.is_freshness());
        assert_eq!(old.field(), "X-Timestamp");
        assert!(old.detail().contains("5m1s old"), "{}", old.detail());

        let ahead = check_x_timestamp(&header(121), now(), &cfg).unwrap_err();
        assert!(ahead.is_freshness());
        assert!(ahead.detail().contains("2m1s ahead"), "{}", ahead.detail());
    }

    #[test]
    fn x_timestamp_must_be_unix_seconds() {
        let cfg = FreshnessConfig::default();
        for bad in [
            "",
            "abc",
            "1.5",
            "+1795000000",
            "2026-11-26T17:00:00Z",
            "99999999999999999999",
        ] {
            let err = check_x_timestamp(bad, now(), &cfg).unwrap_err();
            assert_eq!(err.field(), "X-Timestamp", "{bad}");
        }
        assert!(check_x_timestamp(&format!(" {} ", header(0)), now(), &cfg).is_ok());
        let huge = check_x_timestamp(&i64::MAX.to_string(), now(), &cfg).unwrap_err();
        assert!(huge.detail().contains("range"));
    }

    #[test]
    fn starts_at_only_bounded_in_the_future() {
        let cfg = FreshnessConfig::default();
        let at = |s: i64| Timestamp::from_second(now().as_second() + s).unwrap();
        assert!(check_starts_at("alerts[0].startsAt", at(-86_400), now(), &cfg).is_ok());
        assert!(check_starts_at("alerts[0].startsAt", at(120), now(), &cfg).is_ok());
        let err = check_starts_at("alerts[0].startsAt", at(121), now(), &cfg).unwrap_err();
        assert_eq!(err.field(), "alerts[0].startsAt");
    }

    #[test]
    fn event_time_window() {
        let cfg = FreshnessConfig::default();
        let at = |s: i64| Timestamp::from_second(now().as_second() + s).unwrap();
        assert!(check_event_time("lastTimestamp", at(-300), now(), &cfg).is_ok());
        assert!(check_event_time("lastTimestamp", at(-301), now(), &cfg).is_err());
        assert!(check_event_time("lastTimestamp", at(120), now(), &cfg).is_ok());
        assert!(check_event_time("lastTimestamp", at(121), now(), &cfg).is_err());
        assert_eq!(fmt_duration(SignedDuration::from_secs(3723)), "1h2m3s");
    }
}
