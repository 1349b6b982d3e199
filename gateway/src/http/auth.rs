//! The authentication layer (docs/security.md). It runs before the body is read, so an
//! unauthenticated client cannot make the gateway parse anything. It only reads the bearer token and
//! picks the action from the path; [`crate::auth`] decides, and its errors become problems here:
//! 401 (no/invalid/expired token), 403 (denied), 503 + Retry-After (the API server could not answer).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{Action, AuthError, Authenticator};
pub use crate::auth::{AuthMode, Caller};
use crate::http::problem::Problem;

/// What the layer does with each request.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `auth: none`: every caller is anonymous.
    None,
    /// `auth: kubernetes`.
    Kubernetes(Arc<Authenticator>),
}

/// Lookups have their own permission; every other path (signals, and unknown paths, which then get
/// their 404 only once authenticated) needs the ingestion permission.
pub fn action_of(path: &str) -> Action {
    if path.starts_with("/api/v1/audit/") {
        Action::Lookup
    } else {
        Action::Ingest
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 7235).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken(
            "an Authorization: Bearer <ServiceAccount token> header is required",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::MissingToken("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::MissingToken(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

impl From<&AuthError> for Problem {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::MissingToken(detail) => Problem::unauthorized(*detail),
            AuthError::InvalidToken => Problem::unauthorized(e.to_string()),
            AuthError::Denied { .. } => Problem::forbidden(e.to_string()),
            AuthError::Unavailable { retry_after, .. } => Problem::unavailable(
                "the Kubernetes API server could not review the caller's token; retry later",
                *retry_after,
            ),
        }
    }
}

/// Authenticates and authorises the request (layer 7 of `http::edge`): on success the [`Caller`] is
/// in the request's extensions, else the answer is the refusal (a problem; 401s carry
/// `WWW-Authenticate: Bearer`).
pub async fn authenticate(auth: &Auth, req: &mut Request) -> Result<(), Response> {
    let caller = match auth {
        Auth::None => Caller::anonymous(),
        Auth::Kubernetes(authenticator) => {
            let action = action_of(req.uri().path());
            let result = match bearer_token(req.headers()) {
                Ok(token) => authenticator.authorize(token, action).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(caller) => caller,
                Err(e) => {
                    if e.is_denied() {
                        tracing::info!(action = action.as_str(), error = %e, "request denied");
                    } else {
                        tracing::debug!(action = action.as_str(), error = %e, "request refused");
                    }
                    let mut resp = Problem::from(&e).into_response();
                    if e.is_unauthenticated() {
                        resp.headers_mut().insert(
                            header::WWW_AUTHENTICATE,
                            header::HeaderValue::from_static("Bearer"),
                        );
                    }
                    return Err(resp);
                }
            }
        }
    };
    req.extensions_mut().insert(caller);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Ok("abc"));
        for bad in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            assert!(bearer_token(&headers(bad)).is_err(), "{bad:?}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn lookups_are_told_apart_from_ingestion() {
        assert_eq!(action_of("/api/v1/audit/correlations/x"), Action::Lookup);
        assert_eq!(action_of("/api/v1/signals/prometheus"), Action::Ingest);
        assert_eq!(action_of("/anything"), Action::Ingest);
    }
}
