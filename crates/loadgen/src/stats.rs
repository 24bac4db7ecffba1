//! What a run measured: an HdrHistogram of latencies per request kind and per second of the
//! run, error counts by kind, and the shop's business outcomes. One lock guards it all: a
//! recording is a few counter bumps, far cheaper than the request it records.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The requests a session makes, for per-kind statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Categories,
    Browse,
    Search,
    Product,
    Page,
    AddToCart,
    Cart,
    Checkout,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Categories => "categories",
            Self::Browse => "browse",
            Self::Search => "search",
            Self::Product => "product",
            Self::Page => "product_page",
            Self::AddToCart => "add_to_cart",
            Self::Cart => "cart",
            Self::Checkout => "checkout",
        }
    }
}

/// The business outcome of a checkout the shop accepted and is still processing (202); the
/// others are named by their problem codes.
pub const CHECKOUT_PENDING: &str = "checkout_pending";

/// How a request ended, as the statistics count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An answer the shop gives by design (out of stock, declined card): not an error.
    Business(&'static str),
    /// Anything else: a 5xx, an unexpected 4xx, a timeout, no connection.
    Error(String),
}

/// Latencies from 1 µs to 10 min, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    // Only bounds out of order or more than 5 digits fail; these are constants within both.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

pub struct Second {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

struct Inner {
    by_kind: BTreeMap<Kind, (Histogram<u64>, u64)>,
    all: Histogram<u64>,
    timeline: Vec<Second>,
    errors: BTreeMap<String, u64>,
    business: BTreeMap<&'static str, u64>,
    /// Units of each SKU in the orders checkouts confirmed.
    confirmed_units: BTreeMap<String, i64>,
    orders_placed: u64,
}

pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            inner: Mutex::new(Inner {
                by_kind: BTreeMap::new(),
                all: histogram(),
                timeline: Vec::new(),
                errors: BTreeMap::new(),
                business: BTreeMap::new(),
                confirmed_units: BTreeMap::new(),
                orders_placed: 0,
            }),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while recording leaves counters that are still counters: keep using them.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a request that was meant to start at `intended` and ended now.
    pub fn record(&self, kind: Kind, intended: Instant, outcome: &Outcome) {
        let now = Instant::now();
        let micros = u64::try_from(now.saturating_duration_since(intended).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let second = usize::try_from(now.saturating_duration_since(self.started).as_secs())
            .unwrap_or(usize::MAX);
        let mut inner = self.lock();
        let (per_kind, count) = inner
            .by_kind
            .entry(kind)
            .or_insert_with(|| (histogram(), 0));
        per_kind.saturating_record(micros);
        *count += 1;
        inner.all.saturating_record(micros);
        while inner.timeline.len() <= second && inner.timeline.len() < 86_400 {
            inner.timeline.push(Second {
                requests: 0,
                errors: 0,
                latency: histogram(),
            });
        }
        let is_error = matches!(outcome, Outcome::Error(_));
        if let Some(slot) = inner.timeline.get_mut(second) {
            slot.requests += 1;
            slot.errors += u64::from(is_error);
            slot.latency.saturating_record(micros);
        }
        match outcome {
            Outcome::Ok => {}
            Outcome::Business(what) => *inner.business.entry(what).or_default() += 1,
            Outcome::Error(what) => {
                *inner
                    .errors
                    .entry(format!("{}:{what}", kind.name()))
                    .or_default() += 1
            }
        }
    }

    /// An arrival the open model could not start (too many sessions in flight).
    pub fn dropped(&self) {
        *self
            .lock()
            .errors
            .entry("session:dropped".into())
            .or_default() += 1;
    }

    /// A checkout that placed an order, with its lines.
    pub fn order_placed(&self, lines: &[(String, i64)]) {
        let mut inner = self.lock();
        inner.orders_placed += 1;
        for (sku, quantity) in lines {
            *inner.confirmed_units.entry(sku.clone()).or_default() += quantity;
        }
    }

    /// A copy of what was measured so far.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            elapsed: self.started.elapsed(),
            by_kind: inner
                .by_kind
                .iter()
                .map(|(kind, (histogram, count))| (*kind, histogram.clone(), *count))
                .collect(),
            all: inner.all.clone(),
            timeline: inner
                .timeline
                .iter()
                .map(|s| Second {
                    requests: s.requests,
                    errors: s.errors,
                    latency: s.latency.clone(),
                })
                .collect(),
            errors: inner.errors.clone(),
            business: inner.business.clone(),
            confirmed_units: inner.confirmed_units.clone(),
            orders_placed: inner.orders_placed,
        }
    }

    /// Requests and errors of the last full second, and the p99 so far, for the progress line.
    pub fn progress(&self) -> (u64, u64, Duration) {
        let inner = self.lock();
        let last = inner
            .timeline
            .len()
            .checked_sub(2)
            .and_then(|i| inner.timeline.get(i));
        let errors: u64 = inner.errors.values().sum();
        (
            last.map_or(0, |s| s.requests),
            errors,
            Duration::from_micros(inner.all.value_at_quantile(0.99)),
        )
    }
}

pub struct Snapshot {
    pub elapsed: Duration,
    pub by_kind: Vec<(Kind, Histogram<u64>, u64)>,
    pub all: Histogram<u64>,
    pub timeline: Vec<Second>,
    pub errors: BTreeMap<String, u64>,
    pub business: BTreeMap<&'static str, u64>,
    pub confirmed_units: BTreeMap<String, i64>,
    pub orders_placed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_intended_start() {
        let recorder = Recorder::new();
        let intended = Instant::now() - Duration::from_millis(200);
        recorder.record(Kind::Product, intended, &Outcome::Ok);
        recorder.record(
            Kind::Product,
            Instant::now(),
            &Outcome::Business("out_of_stock"),
        );
        recorder.record(
            Kind::Checkout,
            Instant::now(),
            &Outcome::Error("http_500".into()),
        );
        let snapshot = recorder.snapshot();
        assert!(
            snapshot.all.max() >= 200_000,
            "the wait before sending counts"
        );
        assert_eq!(snapshot.all.len(), 3);
        assert_eq!(snapshot.errors.get("checkout:http_500"), Some(&1));
        assert_eq!(snapshot.business.get("out_of_stock"), Some(&1));
        assert_eq!(snapshot.timeline.iter().map(|s| s.errors).sum::<u64>(), 1);
    }
}
