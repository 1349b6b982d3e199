//! The real reviews: `authentication.k8s.io/v1` TokenReview and `authorization.k8s.io/v1`
//! SubjectAccessReview, created with the gateway's own ServiceAccount (the chart's ClusterRole grants
//! exactly `create` on both).

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::{AuthError, Identity, Permission, Reviewer, TokenVerdict};
use crate::telemetry::metrics::{ApiLabels, ApiVerb, Metrics};

/// How long one review may take before the request is answered 503.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// `Retry-After` when a review could not be made.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct KubeReviewer {
    tokens: Api<TokenReview>,
    access: Api<SubjectAccessReview>,
    metrics: Metrics,
    /// The audience a token must be valid for; `None`: the API server's own (docs/security.md).
    audience: Option<String>,
}

impl std::fmt::Debug for KubeReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReviewer").finish_non_exhaustive()
    }
}

impl KubeReviewer {
    pub fn new(client: Client, metrics: Metrics, audience: Option<String>) -> Self {
        Self {
            tokens: Api::all(client.clone()),
            access: Api::all(client),
            metrics,
            audience,
        }
    }

    async fn create<K>(&self, verb: ApiVerb, api: &Api<K>, obj: &K) -> Result<K, AuthError>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let result = tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), obj))
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("review timed out".into())));
        let code = match &result {
            Ok(_) => "201".to_owned(),
            Err(kube::Error::Api(s)) => s.code.to_string(),
            Err(_) => "error".to_owned(),
        };
        self.metrics
            .apiserver_requests
            .get_or_create(&ApiLabels { verb, code })
            .inc();
        result.map_err(|e| {
            // Whatever the API server said (including 401/403 about the gateway's own credentials or
            // RBAC), the caller cannot fix it: 503, and the operator reads the log.
            tracing::warn!(?verb, error = %e, "review failed");
            AuthError::Unavailable {
                detail: e.to_string(),
                retry_after: RETRY_AFTER,
            }
        })
    }
}

impl Reviewer for KubeReviewer {
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenVerdict, AuthError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: self.audience.clone().map(|a| vec![a]),
                },
                ..TokenReview::default()
            };
            let done = self
                .create(ApiVerb::tokenreview, &self.tokens, &review)
                .await?;
            let status = done.status.unwrap_or_default();
            // With an audience asked for, the answer must name it: an authenticator that ignores
            // audiences would otherwise let a token for another audience through.
            let audience_ok = match &self.audience {
                None => true,
                Some(a) => status.audiences.as_ref().is_some_and(|got| got.contains(a)),
            };
            let user = status.user.unwrap_or_default();
            match (status.authenticated, user.username) {
                (Some(true), Some(username)) if !username.is_empty() && audience_ok => {
                    Ok(TokenVerdict::Authenticated(Identity {
                        username,
                        uid: user.uid,
                        groups: user.groups.unwrap_or_default(),
                        extra: user.extra.unwrap_or_default(),
                    }))
                }
                _ => {
                    tracing::debug!(error = ?status.error, "token rejected by TokenReview");
                    Ok(TokenVerdict::Rejected)
                }
            }
        })
    }

    fn review_access<'a>(
        &'a self,
        who: &'a Identity,
        permission: &'a Permission,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(who.username.clone()),
                    uid: who.uid.clone(),
                    groups: Some(who.groups.clone()),
                    extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(namespace.to_owned()),
                        verb: Some(permission.verb.clone()),
                        group: Some(permission.group.clone()),
                        resource: Some(permission.resource.clone()),
                        subresource: opt(&permission.subresource),
                        name: Some(name.to_owned()),
                        ..ResourceAttributes::default()
                    }),
                    non_resource_attributes: None,
                },
                ..SubjectAccessReview::default()
            };
            let done = self
                .create(ApiVerb::subjectaccessreview, &self.access, &review)
                .await?;
            let status = done.status.unwrap_or_default();
            if let Some(e) = status.evaluation_error.filter(|e| !e.is_empty()) {
                tracing::debug!(error = %e, "SubjectAccessReview evaluation error");
            }
            Ok(status.allowed && status.denied != Some(true))
        })
    }
}
