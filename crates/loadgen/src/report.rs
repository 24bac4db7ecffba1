//! The result of a run: the JSON document `--out` writes (shape `emporium-loadtest/1`,
//! documented in docs/LOADTEST.md) and the summary printed at the end.

use std::collections::BTreeMap;

use emporium_api::ProblemCode;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{LoadConfig, Model};
use crate::stats::{CHECKOUT_PENDING, Snapshot};

pub const SCHEMA: &str = "emporium-loadtest/1";

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KindStats {
    pub requests: u64,
    pub throughput_rps: f64,
    pub latency: Latency,
}

/// A point of the latency distribution: this share of requests took at most `latency_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub latency_ms: f64,
}

/// The percentiles the distribution is given at, denser towards the tail.
const DISTRIBUTION: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

#[derive(Debug, Clone, Serialize)]
pub struct SecondStats {
    pub second: usize,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Business {
    pub orders_placed: u64,
    /// Units of each SKU in the confirmed orders.
    pub units_sold: BTreeMap<String, i64>,
    pub out_of_stock: u64,
    pub payment_declined: u64,
    pub checkout_pending: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Objectives {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    pub met: bool,
    /// What was missed, in words.
    pub missed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelReport {
    Closed { users: usize, ramp_up_secs: f64 },
    Open { rate_per_sec: f64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub target: String,
    pub model: ModelReport,
    pub started_at: String,
    pub duration_secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub throughput_rps: f64,
    pub latency: Latency,
    /// Latency at each of a fixed set of percentiles, over all requests.
    pub distribution: Vec<PercentilePoint>,
    pub by_kind: BTreeMap<&'static str, KindStats>,
    /// Error counts by `<request kind>:<what>` (`checkout:http_503`, `product:timeout`, ...).
    pub errors_by_kind: BTreeMap<String, u64>,
    pub business: Business,
    pub timeline: Vec<SecondStats>,
    pub objectives: Objectives,
}

impl Report {
    pub fn build(config: &LoadConfig, started_at: String, snapshot: &Snapshot) -> Self {
        let seconds = snapshot.elapsed.as_secs_f64().max(0.001);
        let requests = snapshot.all.len();
        let errors: u64 = snapshot.errors.values().sum();
        let error_rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        let latency = Latency::of(&snapshot.all);
        let mut missed = Vec::new();
        if let Some(limit) = config.max_p99_ms
            && latency.p99_ms > limit
        {
            missed.push(format!("p99 {:.1} ms is above {limit} ms", latency.p99_ms));
        }
        if let Some(limit) = config.max_error_rate
            && error_rate > limit
        {
            missed.push(format!("error rate {:.4} is above {limit}", error_rate));
        }
        if requests == 0 {
            missed.push("no request was made".into());
        }
        let business = |name: &str| snapshot.business.get(name).copied().unwrap_or(0);
        Self {
            schema: SCHEMA,
            target: config.target.clone(),
            model: match config.model() {
                Model::Closed { users, ramp_up } => ModelReport::Closed {
                    users,
                    ramp_up_secs: ramp_up.as_secs_f64(),
                },
                Model::Open { rate } => ModelReport::Open { rate_per_sec: rate },
            },
            started_at,
            duration_secs: seconds,
            requests,
            errors,
            error_rate,
            throughput_rps: requests as f64 / seconds,
            latency,
            distribution: DISTRIBUTION
                .iter()
                .map(|percentile| PercentilePoint {
                    percentile: *percentile,
                    latency_ms: snapshot.all.value_at_percentile(*percentile) as f64 / 1000.0,
                })
                .collect(),
            by_kind: snapshot
                .by_kind
                .iter()
                .map(|(kind, histogram, count)| {
                    (
                        kind.name(),
                        KindStats {
                            requests: *count,
                            throughput_rps: *count as f64 / seconds,
                            latency: Latency::of(histogram),
                        },
                    )
                })
                .collect(),
            errors_by_kind: snapshot.errors.clone(),
            business: Business {
                orders_placed: snapshot.orders_placed,
                units_sold: snapshot.confirmed_units.clone(),
                out_of_stock: business(ProblemCode::OutOfStock.as_str()),
                payment_declined: business(ProblemCode::PaymentDeclined.as_str()),
                checkout_pending: business(CHECKOUT_PENDING),
            },
            timeline: snapshot
                .timeline
                .iter()
                .enumerate()
                .map(|(second, s)| SecondStats {
                    second,
                    requests: s.requests,
                    errors: s.errors,
                    p50_ms: s.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                })
                .collect(),
            objectives: Objectives {
                max_p99_ms: config.max_p99_ms,
                max_error_rate: config.max_error_rate,
                met: missed.is_empty(),
                missed,
            },
        }
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(
            &mut out,
            format!(
                "{} requests in {:.1} s: {:.1} requests/s, {} errors ({:.2}%)",
                self.requests,
                self.duration_secs,
                self.throughput_rps,
                self.errors,
                self.error_rate * 100.0
            ),
        );
        line(
            &mut out,
            format!(
                "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "request", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
            ),
        );
        let mut rows: Vec<(&str, u64, &Latency)> = self
            .by_kind
            .iter()
            .map(|(name, stats)| (*name, stats.requests, &stats.latency))
            .collect();
        rows.push(("all", self.requests, &self.latency));
        for (name, count, latency) in rows {
            line(
                &mut out,
                format!(
                    "{name:<14} {count:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
                ),
            );
        }
        line(
            &mut out,
            format!(
                "orders placed {}, out of stock {}, declined {}, pending {}",
                self.business.orders_placed,
                self.business.out_of_stock,
                self.business.payment_declined,
                self.business.checkout_pending
            ),
        );
        for (what, count) in &self.errors_by_kind {
            line(&mut out, format!("error {what}: {count}"));
        }
        if self.objectives.met {
            if self.objectives.max_p99_ms.is_some() || self.objectives.max_error_rate.is_some() {
                line(&mut out, "objectives met".into());
            }
        } else {
            for missed in &self.objectives.missed {
                line(&mut out, format!("objective missed: {missed}"));
            }
        }
        out
    }
}
