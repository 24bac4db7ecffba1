//! What the outbox and the consumers count, as Prometheus metrics a service registers
//! (`emporium_platform::metrics::Metrics::observe_outbox` and `observe_consumer`): the outbox's
//! backlog and the age of its oldest entry, events published by type; per consumer group the
//! events handled by outcome, redeliveries, the lag from an event's commit to its handling, and
//! the dead letters waiting, and the deliveries in hand.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// An event type, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

/// A consumer group, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub group: String,
}

/// A group and what became of an event it handled: `applied`, `skipped` (its effect was there
/// already, or it is not for the group), `duplicate` (applied before, by id) or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabel {
    pub group: String,
    pub outcome: &'static str,
}

/// The outbox's counts.
#[derive(Debug, Default, Clone)]
pub struct OutboxStats {
    /// Events published, by type (a record the finisher expands counts each event).
    pub published: Family<TypeLabel, Counter>,
    /// Recorded events not yet published, as the last sweep round saw them.
    pub backlog: Gauge,
    /// Age in seconds of the oldest of them (0 when there is none).
    pub oldest_age: Gauge<f64, AtomicU64>,
}

/// A consumer's counts.
#[derive(Debug, Clone)]
pub struct ConsumerStats {
    pub handled: Family<HandledLabel, Counter>,
    /// Deliveries after the first (a lost acknowledgement, a crash, a failed attempt).
    pub redeliveries: Family<GroupLabel, Counter>,
    /// Seconds from the event's commit (its envelope's `time`) to the end of its handling (its
    /// effect committed, or found there already).
    pub lag: Family<GroupLabel, Histogram, fn() -> Histogram>,
    /// Dead letters waiting, as last counted (up to 100).
    pub dead_letters: Family<GroupLabel, Gauge>,
    /// Deliveries being handled now: received, not yet acknowledged or given back.
    pub in_hand: Family<GroupLabel, Gauge>,
}

impl ConsumerStats {
    /// The counts of `group`, each series there from the start at zero (so a rate over them
    /// starts from the first scrape, and a dashboard finds them before the first redelivery).
    pub fn for_group(group: &str) -> Self {
        let stats = Self::default();
        let label = GroupLabel {
            group: group.to_owned(),
        };
        for outcome in ["applied", "skipped", "duplicate", "failed"] {
            drop(stats.handled.get_or_create(&HandledLabel {
                group: group.to_owned(),
                outcome,
            }));
        }
        drop(stats.redeliveries.get_or_create(&label));
        drop(stats.lag.get_or_create(&label));
        drop(stats.dead_letters.get_or_create(&label));
        drop(stats.in_hand.get_or_create(&label));
        stats
    }
}

fn lag_histogram() -> Histogram {
    // 0.5 ms to about 63 s, each bucket half again the one before: a p99 read from the buckets
    // is within half of the true one.
    Histogram::new(exponential_buckets(0.0005, 1.5, 30))
}

impl Default for ConsumerStats {
    fn default() -> Self {
        Self {
            handled: Family::default(),
            redeliveries: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            dead_letters: Family::default(),
            in_hand: Family::default(),
        }
    }
}
