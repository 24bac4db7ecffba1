//! The traces page of `emporium up`: the process's recent traces, newest first, and each one as
//! a waterfall of its spans across the services, with their attributes. It answers on its own
//! port, so nothing of it is reachable through the storefront, and it has no tracing middleware,
//! so looking at traces makes none. JSON of the same is under `/api/traces`.

use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use actix_web::{App, HttpResponse, HttpServer, web};
use askama::Template;
use emporium_platform::recent_traces::{RecentSpan, RecentTraces, TraceSummary};

/// What the page's documents may load: their own inline styles and nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Starts the page on `listener`; stop it with the returned handle.
pub fn start(
    listener: TcpListener,
    traces: RecentTraces,
) -> std::io::Result<actix_web::dev::ServerHandle> {
    let traces = web::Data::new(traces);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(traces.clone())
            // The storefront's rules for what a browser may do with a page: no scripts, no
            // framing by another site, no sniffing, no referrer to pass on (the waterfall's
            // bars are placed with inline styles, which is all the policy allows).
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "no-referrer")),
            )
            .route("/", web::get().to(list))
            .route("/traces/{id}", web::get().to(one))
            .route("/api/traces", web::get().to(list_json))
            .route("/api/traces/{id}", web::get().to(one_json))
    })
    // Pages for one person: one thread is plenty, and it leaves the cores to the shop.
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

struct Row {
    trace_id: String,
    name: String,
    services: String,
    spans: usize,
    started: String,
    duration: String,
    failed: bool,
}

#[derive(Template)]
#[template(path = "traces.html")]
struct ListPage {
    rows: Vec<Row>,
}

struct Bar {
    depth: usize,
    service: String,
    name: String,
    kind: &'static str,
    duration: String,
    /// Where the bar starts and how wide it is, in percent of the trace.
    left: String,
    width: String,
    failed: bool,
    attributes: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    trace_id: String,
    name: String,
    duration: String,
    bars: Vec<Bar>,
    dropped: usize,
    /// Spans that handled an event (consumer spans), after the request that caused it.
    asynchronous: usize,
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// Seconds ago, which says more on a page you refresh than a clock time.
fn ago(at: SystemTime) -> String {
    let seconds = SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs();
    match seconds {
        0 => "just now".to_owned(),
        1..=59 => format!("{seconds} s ago"),
        _ => format!("{} min ago", seconds / 60),
    }
}

fn html(body: Result<String, askama::Error>) -> HttpResponse {
    match body {
        Ok(page) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .body(page),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

async fn list(traces: web::Data<RecentTraces>) -> HttpResponse {
    let rows = traces
        .summaries()
        .into_iter()
        .map(|summary: TraceSummary| Row {
            services: summary
                .services
                .iter()
                .map(|s| s.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            started: ago(summary.start),
            duration: millis(summary.duration),
            trace_id: summary.trace_id,
            name: summary.name,
            spans: summary.spans,
            failed: summary.failed,
        })
        .collect();
    html(ListPage { rows }.render())
}

async fn one(traces: web::Data<RecentTraces>, id: web::Path<String>) -> HttpResponse {
    let Some((spans, dropped)) = traces.trace(&id) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("No such trace here: it may have been pushed out by newer ones.");
    };
    let start = spans
        .iter()
        .map(|s| s.start)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(start);
    let total = end.duration_since(start).unwrap_or_default().as_secs_f64();
    let percent = |d: Duration| {
        if total > 0.0 {
            d.as_secs_f64() / total * 100.0
        } else {
            0.0
        }
    };
    let bars = in_tree_order(&spans)
        .into_iter()
        .map(|(depth, span)| Bar {
            depth,
            service: span.service.to_string(),
            name: span.name.clone(),
            kind: span.kind,
            duration: millis(span.duration()),
            left: format!(
                "{:.3}",
                percent(span.start.duration_since(start).unwrap_or_default())
            ),
            width: format!("{:.3}", percent(span.duration()).max(0.2)),
            failed: span.failed,
            attributes: span.attributes.clone(),
        })
        .collect();
    let root = spans.first().map(|s| s.name.clone()).unwrap_or_default();
    let asynchronous = spans.iter().filter(|s| s.kind == "consumer").count();
    html(
        TracePage {
            trace_id: id.into_inner(),
            name: root,
            duration: millis(end.duration_since(start).unwrap_or_default()),
            bars,
            dropped,
            asynchronous,
        }
        .render(),
    )
}

/// The spans depth first, children under their parent in the order they started; spans whose
/// parent is not here (the root, or a child of a span still open) start a tree of their own.
fn in_tree_order(spans: &[RecentSpan]) -> Vec<(usize, &RecentSpan)> {
    let here = |id: &str| spans.iter().any(|s| s.span_id == id);
    let mut ordered = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, &RecentSpan)> = spans
        .iter()
        .filter(|s| s.parent_id.as_deref().is_none_or(|p| !here(p)))
        .rev()
        .map(|s| (0, s))
        .collect();
    while let Some((depth, span)) = stack.pop() {
        ordered.push((depth, span));
        stack.extend(
            spans
                .iter()
                .filter(|s| s.parent_id.as_deref() == Some(span.span_id.as_str()))
                .rev()
                .map(|s| (depth + 1, s)),
        );
    }
    ordered
}

/// Milliseconds since the Unix epoch, as JSON readers expect a time.
fn unix_ms(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

async fn list_json(traces: web::Data<RecentTraces>) -> HttpResponse {
    let summaries: Vec<serde_json::Value> = traces
        .summaries()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "trace_id": s.trace_id,
                "name": s.name,
                "services": s.services.iter().map(|s| s.as_ref()).collect::<Vec<&str>>(),
                "spans": s.spans,
                "start_unix_ms": unix_ms(s.start),
                "duration_ms": s.duration.as_secs_f64() * 1000.0,
                "failed": s.failed,
            })
        })
        .collect();
    HttpResponse::Ok().json(summaries)
}

async fn one_json(traces: web::Data<RecentTraces>, id: web::Path<String>) -> HttpResponse {
    match traces.trace(&id) {
        Some((spans, dropped)) => {
            let spans: Vec<serde_json::Value> = spans
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "service": s.service.as_ref(),
                        "name": s.name,
                        "span_id": s.span_id,
                        "parent_id": s.parent_id,
                        "kind": s.kind,
                        "start_unix_ms": unix_ms(s.start),
                        "duration_ms": s.duration().as_secs_f64() * 1000.0,
                        "failed": s.failed,
                        "attributes": s.attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect::<serde_json::Map<String, serde_json::Value>>(),
                    })
                })
                .collect();
            HttpResponse::Ok().json(serde_json::json!({"spans": spans, "dropped_spans": dropped}))
        }
        None => HttpResponse::NotFound()
            .content_type("application/problem+json")
            .json(serde_json::json!({
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "code": emporium_api::ProblemCode::TraceNotFound,
                "detail": "no such trace here: it may have been pushed out by newer ones"
            })),
    }
}
