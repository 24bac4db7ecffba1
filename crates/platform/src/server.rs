//! The HTTP server every service runs: one middleware stack, one set of extractor error
//! mappings, health endpoints, and a graceful stop.
//!
//! Middleware, outermost first: metrics (RED per route, see `crate::metrics`) → header limit →
//! body reader (the whole body, within a deadline, before the request takes a slot) → load
//! shedding → request id → tracing span (one log line per request) → fault switches → problem
//! fallback. The fallback turns any error response that is not already problem+json (an unknown
//! route, a method the route does not take, a framework error) into one, and replaces the body of
//! every 5xx that is not a problem, so no internal detail leaks.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, Error, HttpMessage, HttpRequest, HttpServer, web};
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::Span;
use tracing::field::Empty;
use tracing_actix_web::{RootSpanBuilder, TracingLogger};

use crate::auth::{AdminKey, GatewayKey};
use crate::faults::FaultSwitches;
use crate::health::{self, Readiness};
use crate::metrics::{self, MatchedRoute, Metrics};
use crate::problem::{self, Problem, ProblemCode};
use crate::request_id::RequestId;
use crate::telemetry;

/// Where and how one service listens.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port; read the real one back from [`RunningServer::addr`].
    pub port: u16,
    pub workers: Option<usize>,
    pub body_limit_bytes: usize,
    /// How long a request's body may take to arrive after its headers (see [`read_body`]).
    pub body_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Requests served at once; more are shed (see [`shed`]).
    pub max_in_flight: usize,
    /// The service's fault switches (off unless set through `/admin/faults`).
    pub faults: FaultSwitches,
    /// The admin key; without one, the service has no admin routes of the platform's own.
    pub admin_key: Option<AdminKey>,
    /// The key callers from the shop's services carry (see [`crate::auth::from_gateway`]).
    pub gateway_key: Option<GatewayKey>,
    /// Follow a `traceparent` from any caller, not only from the shop's services (see
    /// [`RequestSpan`]).
    pub trust_trace_context: bool,
}

impl HttpSettings {
    /// Loopback on a port the OS picks, with the settings' defaults otherwise and nothing
    /// switched on: the base of a server started in a test, which sets what it needs on top.
    pub fn loopback() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            workers: None,
            body_limit_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            faults: FaultSwitches::default(),
            admin_key: None,
            gateway_key: None,
            trust_trace_context: false,
        }
    }
}

/// A service that is accepting connections.
pub struct RunningServer {
    name: &'static str,
    addr: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
    /// Work the service runs beside its server (sweepers, reconcilers), stopped with it.
    background: Vec<JoinHandle<()>>,
    /// Work that winds down itself when told the server is stopping.
    winding_down: Vec<JoinHandle<()>>,
    /// Set when the server begins to stop, for that work.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// How long work spawned with [`RunningServer::spawn_until_stopped`] has, once a graceful stop
/// begins, to finish what it holds (a consumer handing back its deliveries) before it is cut
/// short; far inside Kubernetes' 30 s grace period.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves when the service begins to stop (see [`RunningServer::spawn_until_stopped`]).
#[derive(Debug, Clone)]
pub struct Stopping(tokio::sync::watch::Receiver<bool>);

impl Stopping {
    pub async fn wait(mut self) {
        // A server gone without a stop (its sender dropped) is stopping too.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

impl RunningServer {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Base URL for reaching the service locally.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            self.addr.ip().to_string()
        };
        format!("http://{host}:{}", self.addr.port())
    }

    /// A handle that can stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs `work` beside this server as the service's own (its spans carry the service's
    /// name), and stops it when the server stops.
    pub fn spawn(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        self.background
            .push(tokio::spawn(telemetry::in_service(self.name, work)));
    }

    /// Runs the work `work` makes beside this server, as [`RunningServer::spawn`] does, but
    /// tells it when a graceful stop begins (the [`Stopping`] it is given resolves) and gives it
    /// [`STOP_GRACE`] to end by itself before it is cut short: for work that holds something
    /// it should hand back, as a consumer holds the deliveries it is handling.
    pub fn spawn_until_stopped<F, Fut>(&mut self, work: F)
    where
        F: FnOnce(Stopping) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stopping = Stopping(self.stopping.subscribe());
        self.winding_down.push(tokio::spawn(telemetry::in_service(
            self.name,
            work(stopping),
        )));
    }

    /// Stops accepting connections; with `graceful`, in-flight requests get up to the shutdown
    /// timeout to finish and the call returns once the workers are gone. Without it, the call
    /// returns at once while workers wind down in the background (actix does not wait for them).
    /// Background tasks stop first, so none starts work that a stopping server could not finish:
    /// with `graceful`, those that wind down themselves get [`STOP_GRACE`] to do so.
    pub async fn stop(mut self, graceful: bool) -> std::io::Result<()> {
        self.stop_background(graceful).await;
        self.handle.stop(graceful).await;
        self.wait().await
    }

    async fn stop_background(&mut self, graceful: bool) {
        self.stopping.send_replace(true);
        let mut tasks: Vec<JoinHandle<()>> = self.background.drain(..).collect();
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for mut task in self.winding_down.drain(..) {
            // A task that ended is awaited no more; one still running past the deadline is cut
            // short with the rest.
            if !graceful || tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tasks.push(task);
            }
        }
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // A cancelled task reports cancellation; that is the expected outcome here.
            let _ = task.await;
        }
    }

    /// Waits until the server has stopped.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let outcome = match (&mut self.task).await {
            Ok(outcome) => outcome,
            Err(join) => Err(std::io::Error::other(join)),
        };
        self.stop_background(false).await;
        outcome
    }
}

/// Binds `http.host:http.port` and serves the shared stack plus the routes `configure` adds.
/// Must be called inside a Tokio runtime; the server runs on its own worker threads.
pub fn start<F>(
    name: &'static str,
    http: &HttpSettings,
    readiness: Readiness,
    metrics: Metrics,
    configure: F,
) -> std::io::Result<RunningServer>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let listener = TcpListener::bind((http.host.as_str(), http.port))?;
    let addr = listener.local_addr()?;
    let limit = http.body_limit_bytes;
    let readiness = web::Data::new(readiness);
    let metrics = web::Data::new(metrics);
    let shedder = web::Data::new(Shedder::new(http.max_in_flight));
    let body_reading = BodyReading {
        limit,
        timeout: http.body_timeout,
    };
    let faults = web::Data::new(http.faults.clone());
    let admin_key = http.admin_key.clone().map(web::Data::new);
    let gateway_key = http.gateway_key.clone().map(web::Data::new);
    let trust_trace_context = http.trust_trace_context;
    let workers = http
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(ServiceName(name))
            .app_data(shedder.clone())
            .app_data(body_reading)
            .app_data(TrustTraceContext(trust_trace_context))
            .app_data(faults.clone())
            .app_data(readiness.clone())
            .app_data(metrics.clone())
            .app_data(json_config(limit))
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .wrap(from_fn(problem_fallback))
            // Inside the request span, so injected latency and errors show in traces and logs.
            .wrap(from_fn(crate::faults::middleware))
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(shed))
            .wrap(from_fn(read_body))
            .wrap(from_fn(header_limit))
            // Outside the checks of heads and bodies, so their refusals carry the request id.
            .wrap(from_fn(crate::request_id::middleware))
            .wrap(from_fn(metrics::middleware))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::endpoint))
            .configure(|cfg| {
                if let Some(key) = &gateway_key {
                    cfg.app_data(key.clone());
                }
                if let Some(key) = &admin_key {
                    cfg.app_data(key.clone());
                    crate::faults::configure(cfg);
                }
            })
            .configure(configure.clone())
        // No app-wide default service: actix would hand it to every resource too, turning
        // "method not allowed" into "not found". The bare 404/405 become problems below.
    })
    .workers(workers)
    // Signals are handled once per process (see `crate::shutdown`), which then stops every
    // server it runs; a server handling them itself would stop alone.
    .disable_signals()
    .shutdown_timeout(http.shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(RunningServer {
        name,
        addr,
        handle,
        task,
        background: Vec::new(),
        winding_down: Vec::new(),
        stopping: tokio::sync::watch::channel(false).0,
    })
}

/// Most bytes of request headers (names and values together) a service reads. Requests are
/// small here (a session cookie, a trace context); 16 KiB is what common load balancers take,
/// and far below what a client could make the service keep in memory per connection.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Middleware: 431 `headers_too_large` for requests whose headers exceed [`MAX_HEADER_BYTES`].
pub async fn header_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        let problem = Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProblemCode::HeadersTooLarge,
            "Request headers are too large",
        )
        .with_detail(format!("the limit is {MAX_HEADER_BYTES} bytes of headers"))
        .with_limit_bytes(MAX_HEADER_BYTES);
        return Ok(req.into_response(problem.to_response()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// How the body reader buffers: at most `limit` bytes, all of them within `timeout`.
#[derive(Debug, Clone, Copy)]
struct BodyReading {
    limit: usize,
    timeout: Duration,
}

/// Middleware: reads the request's whole body before the request takes one of the service's
/// in-flight slots (see [`shed`]), and gives it `body_timeout` to arrive; a body that takes
/// longer is answered 408 `body_timeout` and its connection closed.
///
/// Without it a body was read by the handler's extractor, inside the slot and with no time
/// limit: 600 clients declaring a 1,000-byte body and sending a byte a second held every slot
/// of the storefront, and every other shopper got 503 for as long as they kept trickling.
/// Waiting bodies now cost only the bytes they have sent (at most the body limit each), and no
/// slot. A body declared larger than the limit is not buffered: the route decides (an image
/// upload takes more, a JSON route refuses it at once), and the deadline still holds while it
/// reads.
pub async fn read_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(reading) = req.app_data::<BodyReading>().copied() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    // HTTP/1 says a request has a body only with a length or a transfer coding; HTTP/2 may
    // send one with neither.
    let may_have_body = match declared {
        Some(length) => length > 0,
        None => {
            req.headers().contains_key(header::TRANSFER_ENCODING)
                || req.version() >= actix_web::http::Version::HTTP_2
        }
    };
    if !may_have_body {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let deadline = tokio::time::Instant::now() + reading.timeout;
    let mut payload = req.take_payload();
    if declared.is_some_and(|length| length > reading.limit as u64) {
        req.set_payload(within(payload, deadline).into());
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let mut body = web::BytesMut::new();
    let read = tokio::time::timeout_at(deadline, async {
        while let Some(chunk) = payload.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() > reading.limit {
                return Ok::<_, PayloadError>(false);
            }
        }
        Ok(true)
    })
    .await;
    match read {
        Ok(Ok(true)) => req.set_payload(body.freeze().into()),
        // More than the limit without saying so (chunked): the route sees what came and the
        // rest, and refuses or takes it as it would.
        Ok(Ok(false)) => {
            let head = futures::stream::once(std::future::ready(Ok(body.freeze())));
            let rest = within(payload, deadline);
            let whole: BoxedPayloadStream = Box::pin(head.chain(rest));
            req.set_payload(whole.into());
        }
        Ok(Err(_)) => {
            let problem = Problem::invalid_body("the body could not be read");
            return Ok(req.into_response(closing(problem.to_response())));
        }
        Err(_) => {
            let problem = Problem::body_timeout(reading.timeout.as_millis());
            return Ok(req.into_response(closing(problem.to_response())));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A body as a stream, the form `Payload` takes one in (actix-http's own alias is not public
/// through actix-web).
type BoxedPayloadStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<web::Bytes, PayloadError>>>>;

/// The rest of a body, failing with a timeout once `deadline` passes.
fn within(payload: Payload, deadline: tokio::time::Instant) -> BoxedPayloadStream {
    Box::pin(futures::stream::unfold(
        Some(payload),
        move |payload| async move {
            let mut payload = payload?;
            match tokio::time::timeout_at(deadline, payload.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(payload))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body took too long to arrive",
                    ))),
                    None,
                )),
            }
        },
    ))
}

/// `response`, and the connection it goes out on closed after it: the rest of a body that was
/// not read would otherwise be taken for the next request.
fn closing(mut response: actix_web::HttpResponse) -> actix_web::HttpResponse {
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// The requests a service may serve at once.
pub struct Shedder {
    permits: Option<Arc<Semaphore>>,
}

impl Shedder {
    fn new(max_in_flight: usize) -> Self {
        Self {
            permits: (max_in_flight > 0).then(|| Arc::new(Semaphore::new(max_in_flight))),
        }
    }
}

/// How long a shed caller should wait before trying again, in seconds.
pub const SHED_RETRY_AFTER_SECS: u32 = 1;

/// Middleware: beyond `max_in_flight` requests at once, answers 503 `overloaded` with
/// `Retry-After` straight away. Queueing them instead would make every request wait behind the
/// backlog until callers time out, and the service would spend its time on answers nobody
/// waits for any more. Probes and metrics always go through, so an overloaded pod is not also
/// restarted or unobserved.
pub async fn shed(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let permits = req
        .app_data::<web::Data<Shedder>>()
        .and_then(|shedder| shedder.permits.clone());
    let exempt = matches!(req.path(), "/healthz" | "/readyz" | "/metrics");
    let _permit = match permits {
        Some(permits) if !exempt => match permits.try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let mut response = Problem::overloaded(SHED_RETRY_AFTER_SECS).to_response();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(SHED_RETRY_AFTER_SECS),
                );
                return Ok(req.into_response(response));
            }
        },
        _ => None,
    };
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// JSON extractor settings: the body limit, and every failure as a problem.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _req| json_problem(error, limit).into())
}

fn json_problem(error: JsonPayloadError, limit: usize) -> Problem {
    match error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => Problem::payload_too_large(limit),
        JsonPayloadError::ContentType => Problem::unsupported_media_type("application/json"),
        JsonPayloadError::Deserialize(error) => match error.classify() {
            serde_json::error::Category::Data => Problem::invalid_body(error.to_string()),
            _ => Problem::invalid_json(error.to_string()),
        },
        JsonPayloadError::Payload(PayloadError::Overflow) => Problem::payload_too_large(limit),
        JsonPayloadError::Payload(PayloadError::Io(error))
            if error.kind() == std::io::ErrorKind::TimedOut =>
        {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                ProblemCode::BodyTimeout,
                "The request body took too long to arrive",
            )
        }
        JsonPayloadError::Payload(_) => Problem::invalid_body("the body could not be read"),
        other => Problem::invalid_body(other.to_string()),
    }
}

fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> Error {
    Problem::invalid_query(error.to_string()).into()
}

fn path_error(error: PathError, _req: &HttpRequest) -> Error {
    Problem::invalid_path(error.to_string()).into()
}

async fn problem_fallback(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    // Keep no clone of the request here: routing needs the only reference to it.
    let response = match next.call(req).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(error) => {
            let rendered = error.error_response();
            if problem::is_problem(rendered.headers().get(header::CONTENT_TYPE)) {
                return Err(error);
            }
            return Err(Problem::from_status(rendered.status()).into());
        }
    };
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || problem::is_problem(response.headers().get(header::CONTENT_TYPE))
        || response.response().extensions().contains::<KeepBody>()
    {
        return Ok(response);
    }
    let (request, original) = response.into_parts();
    let mut replacement = Problem::from_status(status).to_response();
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, replacement))
}

/// Marks an error response whose body is deliberate and safe to show (the readiness report),
/// so the problem fallback leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct KeepBody;

/// The service that serves the request, for its spans and log lines.
#[derive(Clone, Copy)]
struct ServiceName(&'static str);

/// Whether every caller's trace context is followed (see [`RequestSpan`]).
#[derive(Clone, Copy)]
struct TrustTraceContext(bool);

/// When a request started, for the latency in the request log line.
#[derive(Clone, Copy)]
struct Started(Instant);

/// The root span of every request: OpenTelemetry HTTP attributes, the caller's trace as parent,
/// our request id, and one log line when the request ends.
///
/// A caller's `traceparent` is followed when the caller is one of the shop's services (it shows
/// the gateway key), or when the service is told to trust any (`--trust-trace-context`, behind
/// a proxy that starts traces); anyone else's starts a new trace. A stranger's context would let
/// it add spans to a trace others read, and its sampled flag would make the service trace every
/// one of its requests, whatever the sampler keeps.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        request.extensions_mut().insert(Started(Instant::now()));
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let service = request.app_data::<ServiceName>().map_or("", |s| s.0);
        let method = request.method().as_str().to_owned();
        // The route is recorded when the request ends, once routing has matched it: asking for
        // it here would match the path against every route a second time, which showed as a
        // sixth of a catalog read's CPU time in a profile.
        // One span either way, for the log line; only a traced one has a target the
        // OpenTelemetry layer takes (see `telemetry::UNTRACED`).
        macro_rules! request_span {
            ($target:expr) => {
                tracing::info_span!(
                    target: $target,
                    "HTTP request",
                    otel.name = %method,
                    otel.kind = "server",
                    otel.status_code = Empty,
                    service,
                    http.request.method = %method,
                    http.route = Empty,
                    url.path = %telemetry::redacted_path(request.path()),
                    http.response.status_code = Empty,
                    request_id = %request_id,
                    trace_id = Empty,
                )
            };
        }
        let trusted = request
            .app_data::<TrustTraceContext>()
            .is_some_and(|trust| trust.0)
            || crate::auth::from_gateway(request.request());
        let remote = trusted
            .then(|| telemetry::remote_parent(request.headers()))
            .flatten();
        if telemetry::should_trace(remote.as_ref()) {
            let span = request_span!("emporium_platform::server");
            let trace_id = telemetry::adopt_remote_parent(&span, service, remote);
            span.record("trace_id", trace_id);
            span
        } else {
            let span = request_span!(telemetry::UNTRACED);
            span.record("trace_id", telemetry::untraced(remote.as_ref()));
            span
        }
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, started, route, method) = match outcome {
            Ok(response) => {
                let request = response.request();
                let route = request.match_pattern();
                request.extensions_mut().insert(MatchedRoute(route.clone()));
                (
                    response.status(),
                    request.extensions().get::<Started>().copied(),
                    route,
                    Some(request.method()),
                )
            }
            Err(error) => (error.as_response_error().status_code(), None, None, None),
        };
        let route_name = route.as_deref().unwrap_or(metrics::UNMATCHED);
        span.record("http.route", route_name);
        if let Some(method) = method
            && span
                .metadata()
                .is_some_and(|meta| meta.target() != telemetry::UNTRACED)
        {
            // The OpenTelemetry span started when the caller's trace was adopted, so a
            // recorded `otel.name` would no longer rename it; rename it directly.
            telemetry::rename(&span, format!("{method} {route_name}"));
        }
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        let latency_ms = started.map_or(0.0, |s| s.0.elapsed().as_secs_f64() * 1000.0);
        let _entered = span.enter();
        // Probes and scrapes arrive every few seconds; keep them out of the info log.
        let probe = matches!(route.as_deref(), Some("/healthz" | "/readyz" | "/metrics"));
        if probe {
            tracing::debug!(status = status.as_u16(), latency_ms, "request completed");
        } else if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, "request completed");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request completed");
        }
    }
}
