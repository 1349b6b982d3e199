//! Caller authentication (contract §10). It runs before the body is read, so an unauthenticated
//! client cannot make the gateway parse anything.
//!
//! Only `auth: none` exists so far, and only when configured explicitly; TokenReview +
//! SubjectAccessReview slot in here as another [`AuthMode`] without touching the handlers, which
//! read the [`Caller`] extension this layer inserts.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: every caller is `anonymous`. For demos and closed test networks only.
    None,
    /// TokenReview + SubjectAccessReview (not implemented yet: refused at start).
    Kubernetes,
}

/// Who made the request, as recorded in audit events (`actor_type`, `actor_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub actor_type: String,
    pub actor_id: Option<String>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            actor_type: "anonymous".into(),
            actor_id: None,
        }
    }
}

pub async fn layer(State(mode): State<Arc<AuthMode>>, mut req: Request, next: Next) -> Response {
    let caller = match *mode {
        AuthMode::None | AuthMode::Kubernetes => Caller::anonymous(),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}
