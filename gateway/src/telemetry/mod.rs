//! Metrics, logs and traces (docs/operations.md).
//!
//! - Logs: `tracing` with a JSON (default) or text formatter; one line per admission decision at
//!   debug level, warnings and errors always with the request ID.
//! - Traces: OpenTelemetry over OTLP/HTTP, off unless an endpoint is configured. A server span per
//!   request (W3C `traceparent` accepted as its parent), child spans for API server calls and audit
//!   batches; the IDs of the active span go into audit events.

pub mod metrics;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Keeps the tracer provider alive; flushes spans on drop.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("namegate: flushing traces failed: {e}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {0:?}: {1}")]
    Filter(String, String),
    #[error("OTLP exporter: {0}")]
    Otlp(String),
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(
    format: LogFormat,
    level: &str,
    otlp_endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| TelemetryError::Filter(v, e.to_string()))?
        }
        _ => EnvFilter::try_new(level)
            .map_err(|e| TelemetryError::Filter(level.into(), e.to_string()))?,
    };
    let provider = match otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("namegate")
                        .build(),
                )
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            Some(provider)
        }
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("namegate")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    Ok(TelemetryGuard { provider })
}

/// The W3C trace and span IDs of the current span, when tracing is on.
pub fn trace_ids() -> (Option<String>, Option<String>) {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        (
            Some(sc.trace_id().to_string()),
            Some(sc.span_id().to_string()),
        )
    } else {
        (None, None)
    }
}

/// Makes `span` a child of the caller's W3C trace context, if the request carries one.
pub fn accept_trace_context(span: &tracing::Span, headers: &http::HeaderMap) {
    struct Headers<'a>(&'a http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_traceparent_becomes_the_parent_and_reaches_audit_ids() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            );
            let span = tracing::info_span!("request");
            accept_trace_context(&span, &headers);
            let (trace_id, span_id) = span.in_scope(trace_ids);
            assert_eq!(
                trace_id.as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            assert!(
                span_id.is_some_and(|s| s != "00f067aa0ba902b7"),
                "the server span is a new child span"
            );

            // Without a caller context the span starts its own trace.
            let lone = tracing::info_span!("request");
            accept_trace_context(&lone, &http::HeaderMap::new());
            let (own, _) = lone.in_scope(trace_ids);
            assert!(own.is_some_and(|t| t != "4bf92f3577b34da6a3ce929d0e0e4736"));
        });
        // With no tracing layer at all, there are no IDs to record.
        assert_eq!(trace_ids(), (None, None));
    }
}
