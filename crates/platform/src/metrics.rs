//! Prometheus metrics: one registry per service, served at `/metrics` in the OpenMetrics text
//! format, with the RED metrics of its HTTP server recorded for every request.
//!
//! Names follow `emporium_<service>_<thing>_<unit>`: the registry carries the service's prefix,
//! so the five registries of the one-process mode never collide and a dashboard reads the same
//! series whether the services run in one process or in five pods. Routes are labelled by their
//! pattern (`/v1/products/{id}`), never by the path, so a crawler cannot make a series per URL;
//! requests that matched no route share `unmatched`.
//!
//! The endpoint answers only requests that did not come through a proxy (no `Forwarded` or
//! `X-Forwarded-For`): Prometheus scrapes pods directly, while the storefront is published
//! through an ingress that adds those headers, and its metrics are none of a shopper's business.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use emporium_ports::cache::{Cache, CacheStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// The OpenMetrics text format, which Prometheus negotiates and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

type Durations = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.25 ms to about 4 s: loopback calls between services take well under a millisecond when
    // idle, and a checkout under load tens of milliseconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// A service's metrics. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry for `service` (`catalog`, `order`, ...) with the HTTP server's metrics in it.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix(format!("emporium_{service}"));
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            requests.clone(),
        );
        let durations: Durations = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response, by method, route pattern and status",
            Unit::Seconds,
            durations.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being handled now",
            in_flight.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                durations,
                in_flight,
            }),
        }
    }

    /// Adds a service's own metric, named without the `emporium_<service>_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// A counter read when scraped from a count kept elsewhere (named without the prefix and
    /// without `_total`).
    pub fn observe_counter(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.add_observed(name, help, Reader::Counter(Box::new(read)));
    }

    /// A gauge read when scraped.
    pub fn observe_gauge(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.add_observed(name, help, Reader::Gauge(Box::new(read)));
    }

    /// Gauges read when scraped, one per value of `label` (`circuit_open{dependency="catalog"}`).
    pub fn observe_gauges(
        &self,
        name: &str,
        help: &str,
        label: &'static str,
        read: impl Fn() -> Vec<(String, i64)> + Send + Sync + 'static,
    ) {
        self.add_observed(name, help, Reader::Gauges(label, Box::new(read)));
    }

    fn add_observed(&self, name: &str, help: &str, read: Reader) {
        self.registry().register_collector(Box::new(Observed {
            name: name.to_owned(),
            help: help.to_owned(),
            read,
        }));
    }

    /// The cache-aside statistics of this service: hits, misses, loads, errors, and whether
    /// the cache is degraded (its last operation failed). The hit ratio is
    /// `hits / (hits + misses)`.
    pub fn observe_cache(&self, stats: &Arc<CacheStats>) {
        type Count = fn(&CacheStats) -> u64;
        let counters: [(&str, &str, Count); 4] = [
            (
                "cache_hits",
                "Reads answered from the cache",
                CacheStats::hits,
            ),
            (
                "cache_misses",
                "Reads the cache could not answer",
                CacheStats::misses,
            ),
            (
                "cache_loads",
                "Loads from storage after misses (fewer than misses: concurrent misses share one)",
                CacheStats::loads,
            ),
            (
                "cache_errors",
                "Cache operations that failed",
                CacheStats::errors,
            ),
        ];
        for (name, help, read) in counters {
            let stats = stats.clone();
            self.observe_counter(name, help, move || read(&stats));
        }
        let stats = stats.clone();
        self.observe_gauge(
            "cache_degraded",
            "1 while the cache is failing and reads go to storage, else 0",
            move || i64::from(stats.degraded()),
        );
    }

    /// An outbox's counts: its backlog, its oldest entry's age and the events published by type.
    pub fn observe_outbox(&self, stats: &emporium_ports::events::stats::OutboxStats) {
        self.register(
            "events_published",
            "Events the outbox relay published, by type",
            stats.published.clone(),
        );
        self.register(
            "outbox_backlog",
            "Events recorded and not yet published (as of the relay's last round)",
            stats.backlog.clone(),
        );
        self.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest event recorded and not yet published",
            stats.oldest_age.clone(),
        );
    }

    /// A consumer's counts: events handled by group and outcome, redeliveries, the lag from an
    /// event's commit to its handling, and dead letters waiting.
    pub fn observe_consumer(&self, stats: &emporium_ports::events::stats::ConsumerStats) {
        self.register(
            "events_handled",
            "Events a consumer group handled, by outcome (applied, skipped, duplicate, failed)",
            stats.handled.clone(),
        );
        self.register(
            "events_redelivered",
            "Deliveries of an event after its first, by consumer group",
            stats.redeliveries.clone(),
        );
        self.register(
            "events_lag_seconds",
            "Seconds from an event's commit to its handling, by consumer group",
            stats.lag.clone(),
        );
        self.register(
            "events_dead_letters",
            "Dead letters waiting in a consumer group (counted up to 100, every 30 s)",
            stats.dead_letters.clone(),
        );
        self.register(
            "events_in_hand",
            "Deliveries a consumer group is handling now (received, not yet acknowledged)",
            stats.in_hand.clone(),
        );
    }

    /// The use of the cache's connection pool (Redis), read at each scrape; nothing for a cache
    /// without a pool.
    pub fn observe_cache_pool(&self, cache: &Arc<dyn Cache>) {
        if cache.pool().is_none() {
            return;
        }
        type Field = fn(&emporium_ports::cache::PoolUse) -> usize;
        let gauges: [(&str, &str, Field); 4] = [
            (
                "cache_pool_max_connections",
                "Most connections the cache pool opens",
                |p| p.max,
            ),
            (
                "cache_pool_open_connections",
                "Cache connections open now",
                |p| p.open,
            ),
            (
                "cache_pool_idle_connections",
                "Open cache connections waiting for work",
                |p| p.idle,
            ),
            (
                "cache_pool_waiting_calls",
                "Calls waiting for a cache connection",
                |p| p.waiting,
            ),
        ];
        for (name, help, field) in gauges {
            let cache = cache.clone();
            self.observe_gauge(name, help, move || {
                cache
                    .pool()
                    .map_or(0, |pool| i64::try_from(field(&pool)).unwrap_or(i64::MAX))
            });
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry())?;
        Ok(text)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave a registry half-changed in a way that
        // matters to a scrape; keep serving it.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn observe(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        let labels = RequestLabels {
            method,
            route,
            status,
        };
        self.inner.durations.get_or_create(&labels).observe(seconds);
        self.inner.requests.get_or_create(&labels).inc();
    }
}

/// A metric whose value lives elsewhere and is read at each scrape.
struct Observed {
    name: String,
    help: String,
    read: Reader,
}

enum Reader {
    Counter(Box<dyn Fn() -> u64 + Send + Sync>),
    Gauge(Box<dyn Fn() -> i64 + Send + Sync>),
    /// The label's name, and each of its values with the gauge's value.
    Gauges(
        &'static str,
        Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>,
    ),
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for Observed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match &self.read {
            Reader::Counter(read) => {
                let metric = ConstCounter::new(read());
                let sample = encoder.encode_descriptor(
                    &self.name,
                    &self.help,
                    None,
                    metric.metric_type(),
                )?;
                metric.encode(sample)
            }
            Reader::Gauge(read) => {
                let metric = ConstGauge::new(read());
                let sample = encoder.encode_descriptor(
                    &self.name,
                    &self.help,
                    None,
                    metric.metric_type(),
                )?;
                metric.encode(sample)
            }
            Reader::Gauges(label, read) => {
                let mut family = encoder.encode_descriptor(
                    &self.name,
                    &self.help,
                    None,
                    ConstGauge::new(0i64).metric_type(),
                )?;
                for (value, reading) in read() {
                    let labels = [(*label, value)];
                    ConstGauge::new(reading).encode(family.encode_family(&labels)?)?;
                }
                Ok(())
            }
        }
    }
}

/// The route a request matched, left in its extensions by the request span (which works it
/// out anyway) so that matching the path against the routes happens once per request.
pub(crate) struct MatchedRoute(pub(crate) Option<String>);

/// Label value of a method: the standard ones by name, anything else as `other`, so a client
/// cannot make series by inventing methods.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(&Method, &str); 7] = [
        (&Method::GET, "GET"),
        (&Method::HEAD, "HEAD"),
        (&Method::POST, "POST"),
        (&Method::PUT, "PUT"),
        (&Method::PATCH, "PATCH"),
        (&Method::DELETE, "DELETE"),
        (&Method::OPTIONS, "OPTIONS"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| *known == method)
        .map_or("other", |(_, label)| label)
}

/// Middleware recording every request's count, latency and the number in flight. Outermost,
/// so the latency covers the whole stack and errors other middleware return are counted too.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(metrics) = req.app_data::<web::Data<Metrics>>().cloned() else {
        return next.call(req).await;
    };
    let started = Instant::now();
    let method = method_label(req.method());
    metrics.inner.in_flight.inc();
    let outcome = next.call(req).await;
    metrics.inner.in_flight.dec();
    let (status, route) = match &outcome {
        Ok(response) => (
            response.status().as_u16(),
            response
                .request()
                .extensions_mut()
                .remove::<MatchedRoute>()
                .and_then(|route| route.0),
        ),
        Err(error) => (error.as_response_error().status_code().as_u16(), None),
    };
    metrics.observe(
        method,
        route.unwrap_or_else(|| UNMATCHED.to_owned()),
        status,
        started.elapsed().as_secs_f64(),
    );
    outcome
}

/// `GET /metrics`.
pub async fn endpoint(request: HttpRequest, metrics: web::Data<Metrics>) -> HttpResponse {
    let headers = request.headers();
    if headers.contains_key(header::FORWARDED) || headers.contains_key("x-forwarded-for") {
        return HttpResponse::NotFound().finish();
    }
    match metrics.encode() {
        Ok(text) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
            .body(text),
        Err(error) => {
            tracing::error!(%error, "encoding the metrics failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_the_service_prefix_and_count_by_route_and_status() {
        let metrics = Metrics::new("catalog");
        metrics.observe("GET", "/v1/products/{id}".into(), 200, 0.001);
        metrics.observe("GET", "/v1/products/{id}".into(), 200, 0.003);
        metrics.observe("GET", UNMATCHED.into(), 404, 0.0001);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(
                "emporium_catalog_http_requests_total{method=\"GET\",route=\"/v1/products/{id}\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "emporium_catalog_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "emporium_catalog_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/products/{id}\",status=\"200\"} 2"
        ));
        assert!(text.contains("emporium_catalog_http_requests_in_flight 0"));
    }

    #[test]
    fn observed_values_are_read_at_each_scrape() {
        let metrics = Metrics::new("cart");
        let stats = Arc::new(CacheStats::default());
        metrics.observe_cache(&stats);
        stats
            .hits
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("emporium_cart_cache_hits_total 3"), "{text}");
        assert!(text.contains("emporium_cart_cache_misses_total 0"));
        assert!(text.contains("# TYPE emporium_cart_cache_degraded gauge"));
        assert!(text.contains("emporium_cart_cache_degraded 0"));
        stats
            .hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(
            metrics
                .encode()
                .expect("encodes")
                .contains("emporium_cart_cache_hits_total 4")
        );
    }

    #[test]
    fn invented_methods_share_one_label() {
        let custom = Method::from_bytes(b"BREW").expect("a method");
        assert_eq!(method_label(&custom), "other");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }
}
