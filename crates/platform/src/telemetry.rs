//! Logging and tracing set-up.
//!
//! Logs go to stderr, pretty for people or JSON for collectors. Spans always carry OpenTelemetry
//! context, so trace ids exist and travel in `traceparent` between services even without a
//! collector; spans are exported over OTLP/HTTP only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable is set (and
//! `OTEL_SDK_DISABLED` is not `true`), configured by the other `OTEL_*` variables as the
//! OpenTelemetry specification describes.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter, TracerProviderBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::LogFormat;

/// Flushes exported spans when dropped; hold it until the process ends.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("trace export did not shut down cleanly: {error}");
        }
    }
}

/// Whether the environment asks for OTLP export.
pub fn otlp_configured() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    endpoint && !disabled
}

/// Installs the global subscriber and tracer provider. `service_name` is used unless
/// `OTEL_SERVICE_NAME` names the service.
pub fn init(service_name: &str, format: LogFormat, filter: &str) -> anyhow::Result<TelemetryGuard> {
    let mut provider = SdkTracerProvider::builder();
    if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    install(
        service_name,
        format,
        filter,
        provider,
        BoxMakeWriter::new(std::io::stderr),
    )
}

/// [`init`] exporting every span to `exporter` as it ends, whatever the environment says, and
/// writing the log to `logs`: for tests, with an in-memory exporter and a buffer.
pub fn init_with_exporter(
    service_name: &str,
    format: LogFormat,
    filter: &str,
    exporter: impl SpanExporter + 'static,
    logs: impl for<'w> MakeWriter<'w> + Send + Sync + 'static,
) -> anyhow::Result<TelemetryGuard> {
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter);
    install(
        service_name,
        format,
        filter,
        provider,
        BoxMakeWriter::new(logs),
    )
}

fn install(
    service_name: &str,
    format: LogFormat,
    filter: &str,
    provider: TracerProviderBuilder,
    logs: BoxMakeWriter,
) -> anyhow::Result<TelemetryGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(filter)?,
    };

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let provider = provider.with_resource(resource.build()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("emporium"));

    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match format {
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(logs))
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(logs),
            )
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// Makes `span` a child of the trace context the caller sent in `headers`, if any, and returns
/// the span's trace id (all zeros when tracing is not installed).
pub fn adopt_remote_parent(
    span: &tracing::Span,
    headers: &actix_web::http::header::HeaderMap,
) -> String {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        // Only fails when no OpenTelemetry layer is installed, where there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span.context().span().span_context().trace_id().to_string()
}

/// Renames `span`'s OpenTelemetry span (`GET /v1/products/{id}` once the route is known).
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// The `traceparent` (and `tracestate`) headers for a call made inside the current span.
pub fn propagation_headers() -> Vec<(String, String)> {
    let context = tracing::Span::current().context();
    let mut headers = HeaderCollector(Vec::new());
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers);
    });
    headers.0
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

struct HeaderCollector(Vec<(String, String)>);

impl Injector for HeaderCollector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}
