//! Caller authentication and authorisation (docs/security.md): a bearer token is checked by a
//! TokenReview, the identity it names by a SubjectAccessReview for the permission of the action
//! (ingestion or audit lookup). Both results are cached by a SHA-256 of the token, with single-flight
//! loading, so a storm from one sender costs at most one TokenReview and one SubjectAccessReview per
//! TTL.
//!
//! This module decides; `http::auth` only reads the header and turns [`AuthError`] into a problem.

pub mod cache;
pub mod review;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::telemetry::metrics::{AuthCacheLabels, Metrics};
use cache::{Cache, Lookup};

/// How callers of the ingestion port are authenticated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: every caller is `anonymous`. For demos and closed test networks only.
    None,
    /// Bearer token checked by TokenReview, authorised by SubjectAccessReview (the default).
    Kubernetes,
}

/// What a request wants to do; each action has its own permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /api/v1/signals/*` (and every path that is not a lookup).
    Ingest,
    /// `GET /api/v1/audit/correlations/{id}`.
    Lookup,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Lookup => "lookup",
        }
    }
}

/// A permission a SubjectAccessReview asks about, written like `kubectl auth can-i`:
/// `<verb> <resource>[.<group>][/<subresource>]`, e.g. `create services` or `get services/audit`.
/// The namespace and resource name come from [`AuthConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

impl std::str::FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected `<verb> <resource>[.<group>][/<subresource>]`, e.g. `create services`"
            )
        };
        let mut words = s.split_whitespace();
        let (Some(verb), Some(target), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad());
        };
        let (resource_group, subresource) = match target.split_once('/') {
            Some((rg, sub)) => (rg, sub),
            None => (target, ""),
        };
        let (resource, group) = match resource_group.split_once('.') {
            Some((r, g)) => (r, g),
            None => (resource_group, ""),
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        let group_ok = group.is_empty()
            || group
                .split('.')
                .all(|label| word(label) && !label.starts_with('-'));
        if !word(verb)
            || !word(resource)
            || !(subresource.is_empty() || word(subresource))
            || !group_ok
        {
            return Err(bad());
        }
        Ok(Self {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
        })
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        Ok(())
    }
}

/// Settings of `auth: kubernetes` (defaults in `config.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct AuthConfig {
    /// Namespace of the SubjectAccessReviews (the gateway's own).
    pub namespace: String,
    /// Resource name of the SubjectAccessReviews: the gateway's Service name.
    pub resource_name: String,
    pub ingest: Permission,
    pub lookup: Permission,
    /// Lifetime of an authenticated token and of an allowed access.
    pub ttl: Duration,
    /// Lifetime of a rejected token and of a denied access.
    pub negative_ttl: Duration,
    /// Most tokens (and, separately, access decisions) kept.
    pub max_entries: usize,
}

impl AuthConfig {
    pub fn permission(&self, action: Action) -> &Permission {
        match action {
            Action::Ingest => &self.ingest,
            Action::Lookup => &self.lookup,
        }
    }
}

/// Who a token belongs to, as the TokenReview said.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The authenticated caller, as handlers and audit events see it (request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `anonymous` (auth: none), `ServiceAccount` or `User`.
    pub actor_type: String,
    /// The authenticated username (`system:serviceaccount:<ns>:<name>` for a ServiceAccount); `None`
    /// for anonymous callers.
    pub actor_id: Option<String>,
    /// The groups the TokenReview reported (empty for anonymous callers).
    pub groups: Vec<String>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            actor_type: "anonymous".into(),
            actor_id: None,
            groups: Vec::new(),
        }
    }

    pub fn authenticated(id: &Identity) -> Self {
        let actor_type = if id.username.starts_with("system:serviceaccount:") {
            "ServiceAccount"
        } else {
            "User"
        };
        Self {
            actor_type: actor_type.into(),
            actor_id: Some(id.username.clone()),
            groups: id.groups.clone(),
        }
    }

    /// The authenticated username, if any.
    pub fn username(&self) -> Option<&str> {
        self.actor_id.as_deref()
    }
}

/// Why a request was not let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header, or a malformed one (401).
    #[error("{0}")]
    MissingToken(&'static str),
    /// The API server does not accept the token: garbage, expired, revoked, or its ServiceAccount is
    /// gone (401).
    #[error("the bearer token is invalid or expired")]
    InvalidToken,
    /// Authenticated, but RBAC does not grant the action's permission (403).
    #[error("{user} may not {permission} {name:?} in namespace {namespace:?}")]
    Denied {
        user: String,
        permission: String,
        namespace: String,
        name: String,
    },
    /// The API server could not answer a review (503 + Retry-After; never cached).
    #[error("the Kubernetes API server could not review the request: {detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
}

impl AuthError {
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::MissingToken(_) | Self::InvalidToken)
    }
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Denied { .. })
    }
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// What a TokenReview found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    Authenticated(Identity),
    Rejected,
}

/// The API server calls, behind a trait so the cache logic is testable without a server.
pub trait Reviewer: Send + Sync + std::fmt::Debug {
    fn review_token<'a>(&'a self, token: &'a str)
    -> BoxFuture<'a, Result<TokenVerdict, AuthError>>;

    /// Whether `who` has `permission` on `name` in `namespace`.
    fn review_access<'a>(
        &'a self,
        who: &'a Identity,
        permission: &'a Permission,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

type TokenKey = [u8; 32];

/// TokenReview + SubjectAccessReview with caches.
#[derive(Debug)]
pub struct Authenticator {
    reviewer: Arc<dyn Reviewer>,
    config: AuthConfig,
    tokens: Cache<TokenKey, Result<Identity, AuthError>>,
    access: Cache<(TokenKey, Action), Result<(), AuthError>>,
    metrics: Option<Metrics>,
}

impl Authenticator {
    pub fn new(reviewer: Arc<dyn Reviewer>, config: AuthConfig, metrics: Option<Metrics>) -> Self {
        Self {
            reviewer,
            tokens: Cache::new(config.max_entries),
            access: Cache::new(config.max_entries),
            config,
            metrics,
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    fn ttl<T>(&self, result: &Result<T, AuthError>) -> Option<Duration> {
        match result {
            Ok(_) => Some(self.config.ttl),
            Err(e) if e.is_unavailable() => None,
            Err(_) => Some(self.config.negative_ttl),
        }
    }

    /// Authenticates `token` and authorises `action`.
    pub async fn authorize(&self, token: &str, action: Action) -> Result<Caller, AuthError> {
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        let (identity, lookup) = self
            .tokens
            .get_or_load(
                &key,
                |r| self.ttl(r),
                || async {
                    match self.reviewer.review_token(token).await? {
                        TokenVerdict::Authenticated(id) => Ok(id),
                        TokenVerdict::Rejected => Err(AuthError::InvalidToken),
                    }
                },
            )
            .await;
        self.count("token", lookup);
        let identity = identity?;
        let (access, lookup) = self
            .access
            .get_or_load(
                &(key, action),
                |r| self.ttl(r),
                || async {
                    let permission = self.config.permission(action);
                    let (ns, name) = (&self.config.namespace, &self.config.resource_name);
                    match self
                        .reviewer
                        .review_access(&identity, permission, ns, name)
                        .await?
                    {
                        true => Ok(()),
                        false => Err(AuthError::Denied {
                            user: identity.username.clone(),
                            permission: permission.to_string(),
                            namespace: ns.clone(),
                            name: name.clone(),
                        }),
                    }
                },
            )
            .await;
        self.count("access", lookup);
        access.map(|()| Caller::authenticated(&identity))
    }

    fn count(&self, cache: &'static str, lookup: Lookup) {
        if let Some(m) = &self.metrics {
            AuthCacheLookup { cache, lookup }.emit(m);
        }
    }
}

/// Event: one lookup in an auth cache (`namegate_auth_cache_lookups_total{cache, result}`).
#[derive(Debug)]
struct AuthCacheLookup {
    /// `token` (TokenReview results) or `access` (SubjectAccessReview results).
    cache: &'static str,
    lookup: Lookup,
}

impl AuthCacheLookup {
    fn emit(&self, m: &Metrics) {
        m.auth_cache
            .get_or_create(&AuthCacheLabels {
                cache: self.cache,
                result: self.lookup.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config() -> AuthConfig {
        AuthConfig {
            namespace: "gw".into(),
            resource_name: "namegate".into(),
            ingest: "create services".parse().unwrap(),
            lookup: "get services/audit".parse().unwrap(),
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_entries: 100,
        }
    }

    /// Tokens `good-*` belong to `sa`, who may ingest but not look up; `bad` is rejected; `down`
    /// makes the API server unreachable.
    #[derive(Debug, Default)]
    struct Fake {
        token_reviews: AtomicUsize,
        access_reviews: AtomicUsize,
    }

    impl Reviewer for Fake {
        fn review_token<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<TokenVerdict, AuthError>> {
            Box::pin(async move {
                self.token_reviews.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                match token {
                    "down" => Err(AuthError::Unavailable {
                        detail: "connection refused".into(),
                        retry_after: Duration::from_secs(2),
                    }),
                    t if t.starts_with("good") => Ok(TokenVerdict::Authenticated(Identity {
                        username: "system:serviceaccount:mon:sa".into(),
                        ..Identity::default()
                    })),
                    _ => Ok(TokenVerdict::Rejected),
                }
            })
        }

        fn review_access<'a>(
            &'a self,
            _who: &'a Identity,
            permission: &'a Permission,
            _namespace: &'a str,
            _name: &'a str,
        ) -> BoxFuture<'a, Result<bool, AuthError>> {
            Box::pin(async move {
                self.access_reviews.fetch_add(1, Ordering::SeqCst);
                Ok(permission.verb == "create")
            })
        }
    }

    fn auth() -> (Arc<Fake>, Arc<Authenticator>) {
        let fake = Arc::new(Fake::default());
        (
            fake.clone(),
            Arc::new(Authenticator::new(fake, config(), None)),
        )
    }

    #[test]
    fn permissions_parse_like_kubectl_auth_can_i() {
        let p: Permission = "create remediationrequests.kubernaut.ai/status"
            .parse()
            .unwrap();
        assert_eq!(
            (&*p.verb, &*p.resource, &*p.group, &*p.subresource),
            ("create", "remediationrequests", "kubernaut.ai", "status")
        );
        assert_eq!(
            p.to_string(),
            "create remediationrequests.kubernaut.ai/status"
        );
        for bad in [
            "",
            "create",
            "create services extra",
            "Create services",
            "get ./x",
        ] {
            assert!(bad.parse::<Permission>().is_err(), "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_from_one_sender_costs_one_review_of_each_kind_per_ttl() {
        let (fake, auth) = auth();
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                auth.authorize("good-1", Action::Ingest).await
            }));
        }
        for t in tasks {
            let caller = t.await.unwrap().unwrap();
            assert_eq!(
                caller.actor_id.as_deref(),
                Some("system:serviceaccount:mon:sa")
            );
            assert_eq!(caller.actor_type, "ServiceAccount");
        }
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 1);
        assert_eq!(fake.access_reviews.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        auth.authorize("good-1", Action::Ingest).await.unwrap();
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 2);
        assert_eq!(fake.access_reviews.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_need_their_own_permission() {
        let (fake, auth) = auth();
        auth.authorize("good-1", Action::Ingest).await.unwrap();
        let err = auth.authorize("good-1", Action::Lookup).await.unwrap_err();
        assert!(err.is_denied(), "{err:?}");
        assert!(err.to_string().contains("get services/audit"), "{err}");
        // One TokenReview served both actions.
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 1);
        assert_eq!(fake.access_reviews.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_tokens_are_cached_for_the_negative_ttl() {
        let (fake, auth) = auth();
        for _ in 0..10 {
            assert_eq!(
                auth.authorize("bad", Action::Ingest).await,
                Err(AuthError::InvalidToken)
            );
        }
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(auth.authorize("bad", Action::Ingest).await.is_err());
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 2);
        assert_eq!(fake.access_reviews.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_api_server_is_not_cached() {
        let (fake, auth) = auth();
        let err = auth.authorize("down", Action::Ingest).await.unwrap_err();
        assert!(err.is_unavailable() && err.retry_after().is_some());
        auth.authorize("down", Action::Ingest).await.unwrap_err();
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_tokens_are_reviewed_separately() {
        let (fake, auth) = auth();
        auth.authorize("good-1", Action::Ingest).await.unwrap();
        auth.authorize("good-2", Action::Ingest).await.unwrap();
        assert_eq!(fake.token_reviews.load(Ordering::SeqCst), 2);
    }
}
