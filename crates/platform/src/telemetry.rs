//! Logging and tracing set-up.
//!
//! Logs go to stderr, pretty for people or JSON for collectors. Spans always carry OpenTelemetry
//! context, so trace ids exist and travel in `traceparent` between services even without a
//! collector; spans are exported over OTLP/HTTP only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable is set (and
//! `OTEL_SDK_DISABLED` is not `true`), configured by the other `OTEL_*` variables as the
//! OpenTelemetry specification describes.
//!
//! Every span knows the service it belongs to, also when all the services share one process:
//! a service's requests and background work run in an OpenTelemetry context carrying its name,
//! which every span below them inherits, and [`ServiceRouter`] hands each finished span to an
//! exporter whose resource names that service. A collector or Jaeger then shows `storefront`,
//! `order` and the rest as the separate services they are in a cluster.

use std::future::Future;
use std::time::Duration;

use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracerProvider, SimpleSpanProcessor, Span, SpanData, SpanExporter,
    SpanProcessor,
};
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

/// Installs the global subscriber and tracer provider for a process named `process` that runs
/// `services` (one in a pod, all of them in the one-process mode). Spans are named after their
/// service unless `OTEL_SERVICE_NAME` names them all.
pub fn init(
    process: &str,
    services: &[&'static str],
    format: LogFormat,
    filter: &str,
) -> anyhow::Result<TelemetryGuard> {
    let processor = if otlp_configured() {
        Some(ServiceRouter::new(services, || {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()?;
            Ok(Box::new(BatchSpanProcessor::builder(exporter).build()))
        })?)
    } else {
        None
    };
    install(
        process,
        format,
        filter,
        processor,
        BoxMakeWriter::new(std::io::stderr),
    )
}

/// [`init`] exporting every span as it ends to an exporter from `exporter` (one per service),
/// whatever the environment says, and writing the log to `logs`: for tests, with in-memory
/// exporters and a buffer.
pub fn init_with_exporter<E: SpanExporter + 'static>(
    process: &str,
    services: &[&'static str],
    format: LogFormat,
    filter: &str,
    exporter: impl Fn() -> E,
    logs: impl for<'w> MakeWriter<'w> + Send + Sync + 'static,
) -> anyhow::Result<TelemetryGuard> {
    let processor = ServiceRouter::new(services, || {
        Ok(Box::new(SimpleSpanProcessor::new(exporter())))
    })?;
    install(
        process,
        format,
        filter,
        Some(processor),
        BoxMakeWriter::new(logs),
    )
}

fn install(
    process: &str,
    format: LogFormat,
    filter: &str,
    processor: Option<ServiceRouter>,
    logs: BoxMakeWriter,
) -> anyhow::Result<TelemetryGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(filter)?,
    };

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(process.to_owned());
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(processor) = processor {
        provider = provider.with_span_processor(processor);
    }
    let provider = provider.build();
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

/// Makes `span` a span of `service`, and a child of the trace context the caller sent in
/// `headers` if any, and returns the span's trace id (all zeros when tracing is not installed).
pub fn adopt_remote_parent(
    span: &tracing::Span,
    service: &'static str,
    headers: &actix_web::http::header::HeaderMap,
) -> String {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&service_context(service), &HeaderExtractor(headers))
    });
    // Only fails when no OpenTelemetry layer is installed, where there is nothing to link.
    let _ = span.set_parent(parent);
    span.context().span().span_context().trace_id().to_string()
}

/// Runs `work` (a background task, a service's start-up) as `service`'s: spans it starts
/// without a parent, and all below them, belong to that service.
pub fn in_service<F: Future>(service: &'static str, work: F) -> WithContext<F> {
    work.with_context(service_context(service))
}

/// The service a span belongs to, carried in the OpenTelemetry context to every span below.
#[derive(Debug, Clone, Copy)]
struct ServiceName(&'static str);

fn service_context(service: &'static str) -> Context {
    Context::new().with_value(ServiceName(service))
}

/// The span attribute that carries a span's service from its start to its end, where the
/// router reads and removes it; the exported resource says the same.
const SERVICE_ATTRIBUTE: &str = "emporium.service";

/// Hands each finished span to the processor (and so the exporter and resource) of the service
/// it belongs to; spans of no known service (the process's own start-up) go to the process's.
///
/// One tracer provider with one tracing layer, rather than one per service: the tracing layer
/// that starts a span is the first one installed, so per-service layers would all start their
/// spans with the first layer's tracer.
#[derive(Debug)]
pub struct ServiceRouter {
    services: Vec<(&'static str, Box<dyn SpanProcessor>)>,
    process: Box<dyn SpanProcessor>,
}

impl ServiceRouter {
    fn new(
        services: &[&'static str],
        processor: impl Fn() -> anyhow::Result<Box<dyn SpanProcessor>>,
    ) -> anyhow::Result<Self> {
        // A single service is the process, and a name set by the operator names every span.
        let route = services.len() > 1 && std::env::var_os("OTEL_SERVICE_NAME").is_none();
        let services = if route {
            services
                .iter()
                .map(|service| Ok((*service, processor()?)))
                .collect::<anyhow::Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            services,
            process: processor()?,
        })
    }

    fn processor(&self, service: &str) -> &dyn SpanProcessor {
        self.services
            .iter()
            .find(|(name, _)| *name == service)
            .map_or(&*self.process, |(_, processor)| &**processor)
    }

    fn processors(&self) -> impl Iterator<Item = &dyn SpanProcessor> {
        self.services
            .iter()
            .map(|(_, processor)| &**processor)
            .chain(std::iter::once(&*self.process))
    }
}

impl SpanProcessor for ServiceRouter {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        match cx.get::<ServiceName>() {
            Some(ServiceName(service)) if !self.services.is_empty() => {
                span.set_attribute(KeyValue::new(SERVICE_ATTRIBUTE, *service));
                self.processor(service).on_start(span, cx);
            }
            _ => self.process.on_start(span, cx),
        }
    }

    fn on_end(&self, mut span: SpanData) {
        let at = span
            .attributes
            .iter()
            .position(|kv| kv.key.as_str() == SERVICE_ATTRIBUTE);
        match at {
            Some(at) => {
                let service = span.attributes.remove(at).value;
                self.processor(&service.as_str()).on_end(span);
            }
            None => self.process.on_end(span),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        first_error(self.processors().map(|p| p.force_flush()))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        first_error(self.processors().map(|p| p.shutdown_with_timeout(timeout)))
    }

    fn set_resource(&mut self, resource: &Resource) {
        for (service, processor) in &mut self.services {
            let own = Resource::builder_empty()
                .with_attributes(
                    resource
                        .iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                )
                .with_service_name(*service)
                .build();
            processor.set_resource(&own);
        }
        self.process.set_resource(resource);
    }
}

/// Runs every outcome (so every processor is flushed or shut down) and reports the first failure.
fn first_error(outcomes: impl Iterator<Item = OTelSdkResult>) -> OTelSdkResult {
    let mut first: Result<(), OTelSdkError> = Ok(());
    for outcome in outcomes {
        if first.is_ok() {
            first = outcome;
        }
    }
    first
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Records each exported span's name under the `service.name` its exporter was given.
    #[derive(Clone, Debug, Default)]
    struct Recorder {
        service: String,
        spans: Arc<Mutex<Vec<(String, String)>>>,
    }

    impl SpanExporter for Recorder {
        fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            let mut spans = self.spans.lock().expect("lock");
            for span in batch {
                assert!(
                    !span
                        .attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == SERVICE_ATTRIBUTE),
                    "the routing attribute is not exported"
                );
                spans.push((self.service.clone(), span.name.to_string()));
            }
            std::future::ready(Ok(()))
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.service = resource
                .get(&opentelemetry::Key::new("service.name"))
                .map(|name| name.to_string())
                .unwrap_or_default();
        }
    }

    /// Runs `work` with a subscriber that exports through a router for `services` and returns
    /// what each service exported.
    fn exported(
        services: &[&'static str],
        work: impl Future<Output = ()>,
    ) -> Vec<(String, String)> {
        let recorder = Recorder::default();
        let router = ServiceRouter::new(services, || {
            Ok(Box::new(SimpleSpanProcessor::new(recorder.clone())))
        })
        .expect("router");
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("process")
                    .build(),
            )
            .with_span_processor(router)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        {
            let _default = tracing::subscriber::set_default(subscriber);
            runtime.block_on(work);
        }
        provider.shutdown().expect("shutdown");
        recorder.spans.lock().expect("lock").clone()
    }

    async fn traced_work(name: &'static str) {
        async {
            tracing::info_span!("storage put").in_scope(|| {});
        }
        .instrument(tracing::info_span!("pass", otel.name = name))
        .await;
    }

    #[test]
    fn background_work_and_its_children_are_exported_as_their_services() {
        let spans = exported(&["order", "inventory"], async {
            in_service("order", traced_work("reconcile")).await;
            in_service("inventory", traced_work("sweep")).await;
            traced_work("start-up").await;
        });
        let expected = [
            ("order", "storage put"),
            ("order", "reconcile"),
            ("inventory", "storage put"),
            ("inventory", "sweep"),
            ("process", "storage put"),
            ("process", "start-up"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(service, span)| ((*service).to_owned(), (*span).to_owned()))
            .collect();
        assert_eq!(spans, expected);
    }

    #[test]
    fn a_process_with_one_service_exports_everything_as_the_process() {
        let spans = exported(&["order"], in_service("order", traced_work("reconcile")));
        assert_eq!(
            spans,
            vec![
                ("process".to_owned(), "storage put".to_owned()),
                ("process".to_owned(), "reconcile".to_owned()),
            ]
        );
    }
}
