//! `X-Request-ID`: accepted from the client only when it is a short token of safe characters (so it
//! can never break a log line), otherwise generated; always echoed on the response.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_client(value: &HeaderValue) -> Option<Self> {
        let s = value.to_str().ok()?;
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        ok.then(|| Self(s.to_owned()))
    }

    fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl RequestId {
    /// The client's ID when it is safe to keep, else a new one (`http::edge`, layer 1).
    pub fn of(headers: &HeaderMap) -> Self {
        headers
            .get(HEADER)
            .and_then(Self::from_client)
            .unwrap_or_else(Self::generate)
    }

    /// Echoes the ID on the response.
    pub fn stamp(&self, resp: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(self.as_str()) {
            resp.headers_mut().insert(HEADER, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_client_ids_are_kept() {
        let ok = HeaderValue::from_static("am-123_abc.def:1");
        assert_eq!(
            RequestId::from_client(&ok).unwrap().as_str(),
            "am-123_abc.def:1"
        );
        for bad in ["", "a b", "x\ty", "évil", &"a".repeat(129), "{\"json\":1}"] {
            if let Ok(v) = HeaderValue::from_str(bad) {
                assert!(RequestId::from_client(&v).is_none(), "{bad:?}");
            }
        }
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
