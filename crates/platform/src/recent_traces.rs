//! The last traces of this process, kept in memory for `emporium up`'s traces page: a way to see
//! where a checkout's time went without running a collector and Jaeger.
//!
//! Spans reach the store through the SDK's batch span processor (one per service, see
//! [`crate::telemetry`]), so a request only hands its finished spans to a queue; grouping them
//! into traces happens on the processor's thread. The store keeps the newest traces up to a
//! bound, and keeps traces with a failed span longer, in a bound of their own, so a burst of
//! healthy traffic does not push the interesting ones out.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// How many traces the store keeps, and how many spans of one trace.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub traces: usize,
    /// Traces with a failed span kept beyond `traces`.
    pub failed_traces: usize,
    pub spans_per_trace: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            traces: 200,
            failed_traces: 50,
            spans_per_trace: 500,
        }
    }
}

/// One finished span, as the page shows it.
#[derive(Debug, Clone)]
pub struct RecentSpan {
    pub service: Arc<str>,
    pub name: String,
    pub span_id: String,
    /// The parent's span id; `None` for a root, or a parent in another process.
    pub parent_id: Option<String>,
    pub kind: &'static str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub failed: bool,
    pub attributes: Vec<(String, String)>,
}

impl RecentSpan {
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// What the list of traces shows of one.
#[derive(Debug, Clone)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's name, or the earliest span's when the root has not ended yet.
    pub name: String,
    pub services: Vec<Arc<str>>,
    pub spans: usize,
    pub start: SystemTime,
    pub duration: Duration,
    pub failed: bool,
}

#[derive(Debug, Default)]
struct Trace {
    spans: Vec<RecentSpan>,
    failed: bool,
    /// Spans that did not fit under the per-trace bound.
    dropped: usize,
}

#[derive(Debug, Default)]
struct Store {
    traces: HashMap<String, Trace>,
    /// Trace ids, oldest first.
    recent: VecDeque<String>,
    /// Failed traces moved out of `recent` to live longer, oldest first.
    failed: VecDeque<String>,
}

/// The shared store; clone it to hand it to the telemetry set-up and to the page.
#[derive(Debug, Clone, Default)]
pub struct RecentTraces {
    store: Arc<Mutex<Store>>,
    limits: Limits,
}

impl RecentTraces {
    pub fn new(limits: Limits) -> Self {
        Self {
            store: Arc::default(),
            limits,
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves at worst a half-grouped trace; keep serving.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An exporter that files spans under `service` (the resource's name when the SDK tells it).
    pub fn exporter(&self) -> RecentTracesExporter {
        RecentTracesExporter {
            traces: self.clone(),
            service: Arc::from("unknown"),
        }
    }

    fn record(&self, service: &Arc<str>, batch: Vec<SpanData>) {
        let mut store = self.store();
        for span in batch {
            let trace_id = span.span_context.trace_id().to_string();
            let recorded = RecentSpan::from_data(service, span);
            let known = store.traces.contains_key(&trace_id);
            let trace = store.traces.entry(trace_id.clone()).or_default();
            trace.failed |= recorded.failed;
            if trace.spans.len() < self.limits.spans_per_trace {
                trace.spans.push(recorded);
            } else {
                trace.dropped += 1;
            }
            if !known {
                store.recent.push_back(trace_id);
                self.evict(&mut store);
            }
        }
    }

    fn evict(&self, store: &mut Store) {
        while store.recent.len() > self.limits.traces {
            let Some(oldest) = store.recent.pop_front() else {
                break;
            };
            if store.traces.get(&oldest).is_some_and(|t| t.failed) {
                store.failed.push_back(oldest);
            } else {
                store.traces.remove(&oldest);
            }
        }
        while store.failed.len() > self.limits.failed_traces {
            if let Some(oldest) = store.failed.pop_front() {
                store.traces.remove(&oldest);
            }
        }
    }

    /// The traces kept, newest first.
    pub fn summaries(&self) -> Vec<TraceSummary> {
        let store = self.store();
        let mut summaries: Vec<TraceSummary> = store
            .recent
            .iter()
            .chain(store.failed.iter())
            .filter_map(|id| store.traces.get(id).map(|trace| summarize(id, trace)))
            .collect();
        summaries.sort_by_key(|s| std::cmp::Reverse(s.start));
        summaries
    }

    /// One trace's spans in the order they started, and how many did not fit.
    pub fn trace(&self, trace_id: &str) -> Option<(Vec<RecentSpan>, usize)> {
        let store = self.store();
        let trace = store.traces.get(trace_id)?;
        let mut spans = trace.spans.clone();
        spans.sort_by_key(|s| s.start);
        Some((spans, trace.dropped))
    }
}

fn summarize(trace_id: &str, trace: &Trace) -> TraceSummary {
    let start = trace
        .spans
        .iter()
        .map(|s| s.start)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let end = trace.spans.iter().map(|s| s.end).max().unwrap_or(start);
    let ids: Vec<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    // The root: a span whose parent is not in this process's part of the trace.
    let root = trace
        .spans
        .iter()
        .filter(|s| s.parent_id.as_deref().is_none_or(|p| !ids.contains(&p)))
        .min_by_key(|s| s.start);
    // In the order they joined the trace: the caller first.
    let mut by_start: Vec<&RecentSpan> = trace.spans.iter().collect();
    by_start.sort_by_key(|s| s.start);
    let mut services: Vec<Arc<str>> = Vec::new();
    for span in by_start {
        if !services.contains(&span.service) {
            services.push(span.service.clone());
        }
    }
    TraceSummary {
        trace_id: trace_id.to_owned(),
        name: root.map(|s| s.name.clone()).unwrap_or_default(),
        services,
        spans: trace.spans.len() + trace.dropped,
        start,
        duration: end.duration_since(start).unwrap_or_default(),
        failed: trace.failed,
    }
}

impl RecentSpan {
    fn from_data(service: &Arc<str>, span: SpanData) -> Self {
        let parent_id = (span.parent_span_id != opentelemetry::trace::SpanId::INVALID)
            .then(|| span.parent_span_id.to_string());
        let kind = match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        };
        Self {
            service: service.clone(),
            name: span.name.into_owned(),
            span_id: span.span_context.span_id().to_string(),
            parent_id,
            kind,
            start: span.start_time,
            end: span.end_time,
            failed: matches!(span.status, Status::Error { .. }),
            attributes: span
                .attributes
                .into_iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect(),
        }
    }
}

/// Files each exported batch into the store under the service its resource names.
#[derive(Debug, Clone)]
pub struct RecentTracesExporter {
    traces: RecentTraces,
    service: Arc<str>,
}

impl SpanExporter for RecentTracesExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.traces.record(&self.service, batch);
        std::future::ready(Ok(()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(name) = resource.get(&opentelemetry::Key::new("service.name")) {
            self.service = Arc::from(name.as_str().as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span(trace: u128, id: u64, parent: u64, name: &str, failed: bool, at_ms: u64) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.to_owned().into(),
            start_time: start,
            end_time: start + Duration::from_millis(10),
            attributes: vec![KeyValue::new("order.id", "o-1")],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if failed {
                Status::error("boom")
            } else {
                Status::Unset
            },
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn exporter_for(traces: &RecentTraces, service: &str) -> RecentTracesExporter {
        let mut exporter = traces.exporter();
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.to_owned())
                .build(),
        );
        exporter
    }

    fn export(exporter: &RecentTracesExporter, batch: Vec<SpanData>) {
        futures::executor::block_on(exporter.export(batch)).expect("export");
    }

    #[test]
    fn spans_of_several_services_make_one_trace_named_after_its_root() {
        let traces = RecentTraces::new(Limits::default());
        // Children end (and are exported) before their parents, from other services.
        export(
            &exporter_for(&traces, "order"),
            vec![span(1, 2, 1, "saga Reserve", false, 5)],
        );
        export(
            &exporter_for(&traces, "storefront"),
            vec![span(1, 1, 0, "POST /api/v1/checkout", false, 0)],
        );
        let summaries = traces.summaries();
        assert_eq!(summaries.len(), 1);
        let summary = &summaries[0];
        assert_eq!(summary.name, "POST /api/v1/checkout");
        let services: Vec<&str> = summary.services.iter().map(|s| s.as_ref()).collect();
        assert_eq!(services, ["storefront", "order"]);
        assert_eq!(summary.spans, 2);
        assert_eq!(summary.duration, Duration::from_millis(15));
        let (spans, dropped) = traces.trace(&summary.trace_id).expect("the trace");
        assert_eq!(dropped, 0);
        assert_eq!(spans[0].name, "POST /api/v1/checkout");
        assert_eq!(&*spans[1].service, "order");
        assert_eq!(
            spans[1].parent_id.as_deref(),
            Some(spans[0].span_id.as_str())
        );
        assert_eq!(
            spans[1].attributes,
            vec![("order.id".to_owned(), "o-1".to_owned())]
        );
    }

    #[test]
    fn the_newest_traces_are_kept_and_failed_ones_outlive_a_burst() {
        let traces = RecentTraces::new(Limits {
            traces: 3,
            failed_traces: 1,
            spans_per_trace: 2,
        });
        let exporter = exporter_for(&traces, "catalog");
        export(&exporter, vec![span(1, 1, 0, "failed early", true, 0)]);
        for trace in 2..=10u64 {
            export(
                &exporter,
                vec![span(u128::from(trace), trace, 0, "fine", false, trace)],
            );
        }
        let names: Vec<(String, bool)> = traces
            .summaries()
            .into_iter()
            .map(|s| (s.trace_id, s.failed))
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0].0, TraceId::from(10u128).to_string());
        assert_eq!(names[3], (TraceId::from(1u128).to_string(), true));
        // A second failed trace pushes the first one out of its bound once both are old.
        export(&exporter, vec![span(11, 11, 0, "failed later", true, 11)]);
        for trace in 12..=15u64 {
            export(
                &exporter,
                vec![span(u128::from(trace), trace, 0, "fine", false, trace)],
            );
        }
        let failed: Vec<String> = traces
            .summaries()
            .into_iter()
            .filter(|s| s.failed)
            .map(|s| s.name)
            .collect();
        assert_eq!(failed, vec!["failed later".to_owned()]);
        // A trace keeps at most its bound of spans, and counts the rest.
        export(
            &exporter,
            (20..25)
                .map(|id| span(15, id, 15, "child", false, 16))
                .collect(),
        );
        let (spans, dropped) = traces
            .trace(&TraceId::from(15u128).to_string())
            .expect("trace");
        assert_eq!(
            (spans.len(), dropped),
            (2, 4),
            "one of the five joined the root"
        );
    }
}
