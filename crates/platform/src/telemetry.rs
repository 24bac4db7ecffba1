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
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, TraceContextExt, TraceId, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SimpleSpanProcessor, Span,
    SpanData, SpanExporter, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::recent_traces::{RecentTraces, RecentTracesExporter};
use crate::settings::LogFormat;

/// Which spans become OpenTelemetry spans: Emporium's own (every crate's target starts with
/// `emporium`) at info, but not the spans of requests that are not traced; dependencies' spans
/// would only repeat ours one level down.
const TRACE_FILTER: &str = "off,emporium=info,emporium_platform::untraced=off";

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
/// service unless `OTEL_SERVICE_NAME` names them all. With `recent`, finished spans are also
/// kept there for the traces page.
pub fn init(
    process: &str,
    services: &[&'static str],
    format: LogFormat,
    filter: &str,
    recent: Option<&RecentTraces>,
) -> anyhow::Result<TelemetryGuard> {
    let otlp = otlp_configured();
    let processor = if otlp || recent.is_some() {
        Some(ServiceRouter::new(services, || {
            let exporter = Exporters {
                otlp: if otlp {
                    Some(
                        opentelemetry_otlp::SpanExporter::builder()
                            .with_http()
                            .build()?,
                    )
                } else {
                    None
                },
                recent: recent.map(RecentTraces::exporter),
            };
            let mut batch = BatchConfigBuilder::default();
            if recent.is_some() && std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
                // The page should show a request a moment after it ends, not five seconds later.
                batch = batch.with_scheduled_delay(Duration::from_millis(500));
            }
            Ok(Box::new(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch.build())
                    .build(),
            ))
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
        // Colour for a person at a terminal; a file or a pipe would keep the escape codes.
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
}

/// Where a service's finished spans go: the OTLP endpoint, the traces page's store, or both.
/// One exporter for both, so one batch processor (one queue, one thread) serves them.
#[derive(Debug)]
struct Exporters {
    otlp: Option<opentelemetry_otlp::SpanExporter>,
    recent: Option<RecentTracesExporter>,
}

impl SpanExporter for Exporters {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match (&self.otlp, &self.recent) {
            (Some(otlp), Some(recent)) => {
                recent.export(batch.clone()).await?;
                otlp.export(batch).await
            }
            (Some(otlp), None) => otlp.export(batch).await,
            (None, Some(recent)) => recent.export(batch).await,
            (None, None) => Ok(()),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.otlp.as_ref().map_or(Ok(()), SpanExporter::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.otlp
            .as_ref()
            .map_or(Ok(()), |otlp| otlp.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(otlp) = &mut self.otlp {
            otlp.set_resource(resource);
        }
        if let Some(recent) = &mut self.recent {
            recent.set_resource(resource);
        }
    }
}

/// [`init`] exporting every span as it ends to an exporter from `exporter` (one per service),
/// whatever the environment says, keeping the new traces `sampler` keeps, and writing the log to
/// `logs`: for tests, with in-memory exporters and a buffer.
pub fn init_with_exporter<E: SpanExporter + 'static>(
    process: &str,
    services: &[&'static str],
    format: LogFormat,
    filter: &str,
    sampler: RootSampler,
    exporter: impl Fn() -> E,
    logs: impl for<'w> MakeWriter<'w> + Send + Sync + 'static,
) -> anyhow::Result<TelemetryGuard> {
    let processor = ServiceRouter::new(services, || {
        Ok(Box::new(SimpleSpanProcessor::new(exporter())))
    })?;
    let _ = ROOT_SAMPLER.set(sampler);
    install(
        process,
        format,
        filter,
        Some(processor),
        BoxMakeWriter::new(logs),
        false,
    )
}

fn install(
    process: &str,
    format: LogFormat,
    filter: &str,
    processor: Option<ServiceRouter>,
    logs: BoxMakeWriter,
    ansi: bool,
) -> anyhow::Result<TelemetryGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(filter)?,
    };

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(process.to_owned());
    }
    // The decision is made before a span is built (see `RootSampler`); the SDK records what it
    // is given, and follows a caller's decision as that does.
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource.build());
    if let Some(processor) = processor {
        provider = provider.with_span_processor(processor);
    }
    let provider = provider.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    // The log's filter is the operator's; the spans are Emporium's own at info whatever the log
    // shows, so `--log warn` quiets the log without emptying the traces.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("emporium"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(EnvFilter::try_new(TRACE_FILTER)?);

    let registry = tracing_subscriber::registry().with(otel);
    match format {
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(logs)
                    .with_filter(filter),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(logs)
                    .with_filter(filter),
            )
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// `path` as spans and log lines record it: every segment shaped like one of Emporium's ids
/// (26 base32 characters) shown as `{id}`. Some ids are bearer tokens (whoever knows a cart's
/// id owns the cart), and traces and logs are read by more people than those ids belong to;
/// which resource was asked for is still there, and `http.route` names the route.
pub fn redacted_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.split('/').any(crate::id::is_valid) {
        return std::borrow::Cow::Borrowed(path);
    }
    let parts: Vec<&str> = path
        .split('/')
        .map(|part| {
            if crate::id::is_valid(part) {
                "{id}"
            } else {
                part
            }
        })
        .collect();
    std::borrow::Cow::Owned(parts.join("/"))
}

/// The target of a request span that is not traced: the OpenTelemetry layer's filter turns it
/// off (see `TRACE_FILTER`), so such a span reaches the log and nothing else, and no span is
/// built below it.
pub const UNTRACED: &str = emporium_ports::traced::UNTRACED_TARGET;

/// Whether a span started here would be traced: below a traced span, or as a new root (work
/// outside any request). Building a span costs more than the work it measures in a cache hit,
/// so code below an untraced request builds none.
pub fn traced_here() -> bool {
    match tracing::Span::current().metadata() {
        Some(meta) => meta.target() != UNTRACED,
        // An untraced request's span may be off altogether (the log shows warnings only); its
        // task still knows it is not traced.
        None => crate::request_id::untraced_parent().is_none(),
    }
}

/// The caller's trace context from `headers`, when it sent a valid one.
pub fn remote_parent(headers: &actix_web::http::header::HeaderMap) -> Option<SpanContext> {
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    });
    let remote = context.span().span_context().clone();
    remote.is_valid().then_some(remote)
}

/// A span for handling `event` in the consumer group `group` of `service`: a child of the span
/// whose change produced the event (the envelope's `traceparent`, the CloudEvents
/// distributed-tracing extension), so the trace shows the asynchronous hop after the request
/// that caused it; a disabled span when the producer's trace was not sampled.
pub fn consumer_span(
    service: &'static str,
    group: &str,
    event: &emporium_ports::events::Event,
) -> tracing::Span {
    let traceparent = serde_json::from_str::<serde_json::Value>(&event.body)
        .ok()
        .and_then(|envelope| envelope.get("traceparent")?.as_str().map(str::to_owned));
    let remote = traceparent.and_then(|traceparent| {
        let carrier: std::collections::HashMap<String, String> =
            [("traceparent".to_owned(), traceparent)].into();
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract_with_context(&Context::new(), &carrier)
        });
        let remote = context.span().span_context().clone();
        remote.is_valid().then_some(remote)
    });
    if !should_trace(remote.as_ref()) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("consume {}", event.kind),
        otel.kind = "consumer",
        messaging.consumer.group.name = group,
        messaging.message.id = %event.id,
    );
    adopt_remote_parent(&span, service, remote);
    span
}

/// Whether a request that arrives with `remote` (or none) is traced: a caller's decision is
/// followed, so a trace is whole or absent; a new trace is sampled by [`RootSampler`].
pub fn should_trace(remote: Option<&SpanContext>) -> bool {
    match remote {
        Some(parent) => parent.is_sampled(),
        None => root_sampler().sample(),
    }
}

/// Makes the traced request span `span` a span of `service`, and a child of the caller's
/// `remote` context if any, and returns the span's trace id (all zeros when tracing is not
/// installed).
pub fn adopt_remote_parent(
    span: &tracing::Span,
    service: &'static str,
    remote: Option<SpanContext>,
) -> String {
    let mut parent = service_context(service);
    if let Some(remote) = remote {
        parent = parent.with_remote_span_context(remote);
    }
    // Only fails when no OpenTelemetry layer is installed, where there is nothing to link.
    let _ = span.set_parent(parent);
    span.context().span().span_context().trace_id().to_string()
}

/// For a request that is not traced: the trace id its log lines carry (the caller's, or a new
/// one), and the `traceparent` (not sampled) it passes on, so the services it calls log the same
/// trace id and trace nothing either.
pub fn untraced(remote: Option<&SpanContext>) -> String {
    let trace_id = remote.map_or_else(
        || TraceId::from(rand::random::<u128>().max(1)),
        |parent| parent.trace_id(),
    );
    let span_id = SpanId::from(rand::random::<u64>().max(1));
    crate::request_id::set_untraced_parent(format!("00-{trace_id}-{span_id}-00"));
    trace_id.to_string()
}

/// Decides which new traces are kept. It runs before any span is built, because building spans
/// is the cost: with every request traced, a cached product read served under half the
/// requests per second it serves untraced (measured with the benchmark's read).
///
/// `OTEL_TRACES_SAMPLER` is followed for new traces (`always_on`, `always_off`, `traceidratio`
/// with `OTEL_TRACES_SAMPLER_ARG`, and their `parentbased_` forms); a caller's decision always is.
/// Without it, Emporium keeps up to 10 new traces a second per process, then 1 in 100: a
/// person clicking through the shop sees every request, and a load test pays for few.
#[derive(Debug)]
pub struct RootSampler {
    per_second: u32,
    ratio: f64,
    /// The current second (since `epoch`) in the high half, traces kept in it in the low half.
    window: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl RootSampler {
    pub fn new(per_second: u32, ratio: f64) -> Self {
        Self {
            per_second,
            ratio: ratio.clamp(0.0, 1.0),
            window: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, or Emporium's default.
    pub fn from_env() -> Self {
        Self::from_setting(
            &std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default(),
            std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
        )
    }

    /// From the values of `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_setting(sampler: &str, arg: Option<&str>) -> Self {
        // An argument out of range is ignored, as the specification says, for the default 1.
        let ratio = || {
            arg.and_then(|arg| arg.trim().parse::<f64>().ok())
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .unwrap_or(1.0)
        };
        match sampler.trim().to_ascii_lowercase().as_str() {
            "always_on" | "parentbased_always_on" => Self::new(0, 1.0),
            "always_off" | "parentbased_always_off" => Self::new(0, 0.0),
            "traceidratio" | "parentbased_traceidratio" => Self::new(0, ratio()),
            _ => Self::new(10, 0.01),
        }
    }

    pub fn sample(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.per_second > 0 {
            let second = self.epoch.elapsed().as_secs() & u64::from(u32::MAX);
            let mut seen = self.window.load(Ordering::Relaxed);
            loop {
                let (window, kept) = (seen >> 32, seen & u64::from(u32::MAX));
                let next = if window == second {
                    if kept >= u64::from(self.per_second) {
                        break;
                    }
                    seen + 1
                } else {
                    (second << 32) | 1
                };
                match self.window.compare_exchange_weak(
                    seen,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    Err(now) => seen = now,
                }
            }
        }
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
    }
}

static ROOT_SAMPLER: std::sync::OnceLock<RootSampler> = std::sync::OnceLock::new();

fn root_sampler() -> &'static RootSampler {
    ROOT_SAMPLER.get_or_init(RootSampler::from_env)
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

/// The `traceparent` (and `tracestate`) headers for a call made inside the current span; for a
/// request that is not traced, its not-sampled `traceparent`.
pub fn propagation_headers() -> Vec<(String, String)> {
    if !traced_here() {
        return crate::request_id::untraced_parent()
            .map(|parent| vec![("traceparent".to_owned(), parent)])
            .unwrap_or_default();
    }
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
    #[test]
    fn paths_are_recorded_without_the_ids_in_them() {
        let cart = crate::id::new_id();
        assert_eq!(
            super::redacted_path(&format!("/v1/carts/{cart}/lines")),
            "/v1/carts/{id}/lines"
        );
        assert_eq!(
            super::redacted_path(&format!("/v1/carts/{cart}/checkout/{cart}/complete")),
            "/v1/carts/{id}/checkout/{id}/complete"
        );
        assert_eq!(
            super::redacted_path("/v1/stock/KIT-001"),
            "/v1/stock/KIT-001"
        );
        assert_eq!(super::redacted_path("/"), "/");
    }

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
    fn the_root_sampler_keeps_its_quota_each_second_then_its_ratio() {
        let quota = RootSampler::new(3, 0.0);
        let kept = (0..10).filter(|_| quota.sample()).count();
        assert_eq!(kept, 3, "three this second, none after with a ratio of 0");
        let all = RootSampler::new(0, 1.0);
        assert!((0..100).all(|_| all.sample()));
        let none = RootSampler::new(0, 0.0);
        assert!(!(0..100).any(|_| none.sample()));
        let some = RootSampler::new(0, 0.5);
        let kept = (0..2000).filter(|_| some.sample()).count();
        assert!((800..1200).contains(&kept), "{kept} of 2000 at 0.5");
    }

    #[test]
    fn the_root_sampler_follows_the_standard_variables() {
        let ratio = |sampler: &str, arg: Option<&str>| {
            let s = RootSampler::from_setting(sampler, arg);
            (s.per_second, s.ratio)
        };
        assert_eq!(ratio("always_on", None), (0, 1.0));
        assert_eq!(ratio("parentbased_always_off", None), (0, 0.0));
        assert_eq!(ratio("parentbased_traceidratio", Some("0.25")), (0, 0.25));
        assert_eq!(ratio("TraceIdRatio", Some(" 0.5 ")), (0, 0.5));
        assert_eq!(
            ratio("traceidratio", Some("7")),
            (0, 1.0),
            "out of range: 1"
        );
        assert_eq!(ratio("", None), (10, 0.01), "Emporium's default");
        assert_eq!(ratio("jaeger_remote", None), (10, 0.01));
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
