//! The events port: publish events, and receive them as a named consumer group, at least once.
//!
//! The model is SNS fanning out to SQS queues, which is what the AWS adapter uses. Each consumer
//! group declared with a [`GroupDef`] has a queue of its own that gets a copy of every published
//! event whose type the group names, so groups never compete with each other; the replicas of
//! one group do compete, and each event goes to one of them at a time (SQS standard queues may,
//! rarely, hand one to two receivers at once: another duplicate that consumers' deduplication
//! absorbs). A received event stays
//! hidden from the group's other receivers for the group's visibility timeout: acknowledged
//! within it, it is gone; not (the consumer crashed, or was slower than it said), it is delivered
//! again, to any replica. An event delivered `max_attempts` times without an acknowledgement is
//! moved to the group's dead letters, where it waits for an operator to look at it and
//! [`Events::redrive`] it.
//!
//! Delivery is at least once and in no promised order. Consumers therefore record the ids of the
//! events they have applied, in the same write as the effect, and compare the aggregate's
//! version the event carries where order matters.
//!
//! An event's type is `emporium.<aggregate>.<what>.v<n>`; the aggregate names the topic it is
//! published on ([`topic_of`]), so a consumer group subscribes to whole topics filtered by type.

pub mod consumer;
pub mod outbox;
pub mod stats;
pub mod stored;

#[cfg(feature = "testsuite")]
pub mod conformance;

use std::time::Duration;

use async_trait::async_trait;

/// The largest event body (the envelope's JSON), as stored (a JSON string, escapes counted):
/// SNS and SQS take 256 KiB with the message's attributes, and a store's item 400 KiB; this
/// leaves room for both.
pub const MAX_EVENT_BYTES: usize = 240 * 1024;
/// Most events one `receive` returns (SQS's limit).
pub const MAX_RECEIVE: usize = 10;
/// Longest a `receive` waits for a first event (SQS's long-poll limit).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest an event may stay hidden after a receive or an extension (SQS's limit: 12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// How long an event waits in a group's queue, or its dead letters, before it is dropped
/// (SQS's longest retention).
pub const RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// A consumer group: who receives what, and how patiently. Services declare theirs as constants,
/// and `emporium init` creates the queues and subscriptions from the same declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDef {
    /// Unique among the platform's groups: letters, digits and dashes.
    pub name: &'static str,
    /// The event types the group receives.
    pub types: &'static [&'static str],
    /// How long a received event stays hidden before it is delivered again (whole seconds).
    pub visibility: Duration,
    /// Deliveries without an acknowledgement before the event moves to the dead letters.
    pub max_attempts: u32,
}

impl GroupDef {
    /// A group receiving `types` with SQS's default visibility timeout, 30 s (handlers slower
    /// than half of it extend it), and ten attempts before the dead letters: a failed attempt
    /// comes back a second later per attempt so far, so a dependency out for up to about 45 s
    /// costs no dead letter, and a poison event is parked within a minute.
    pub const fn standard(name: &'static str, types: &'static [&'static str]) -> Self {
        Self {
            name,
            types,
            visibility: Duration::from_secs(30),
            max_attempts: 10,
        }
    }

    pub fn wants(&self, kind: &str) -> bool {
        self.types.contains(&kind)
    }

    /// The topics the group subscribes to, each once.
    pub fn topics(&self) -> Vec<&'static str> {
        let mut topics: Vec<&'static str> = self
            .types
            .iter()
            .filter_map(|kind| topic_of(kind).ok())
            .collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    /// Checks the declaration, as `init` and every adapter do before using it.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(EventsError::Invalid(format!(
                "group name {:?}: 1 to 40 lowercase letters, digits and dashes",
                self.name
            )));
        }
        if self.types.is_empty() {
            return Err(EventsError::Invalid(format!(
                "group {} receives no event type",
                self.name
            )));
        }
        for kind in self.types {
            topic_of(kind)?;
        }
        if self.visibility.subsec_nanos() != 0
            || self.visibility.is_zero()
            || self.visibility > MAX_VISIBILITY
        {
            return Err(EventsError::Invalid(format!(
                "group {}: the visibility timeout is whole seconds, 1 s to 12 h",
                self.name
            )));
        }
        if !(1..=1000).contains(&self.max_attempts) {
            return Err(EventsError::Invalid(format!(
                "group {}: max_attempts is 1 to 1000",
                self.name
            )));
        }
        Ok(())
    }
}

/// The topic an event type is published on: its aggregate (`order` for
/// `emporium.order.confirmed.v1`).
pub fn topic_of(kind: &str) -> Result<&str> {
    let mut parts = kind.split('.');
    let shaped = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("emporium"), Some(aggregate), Some(what), Some(version), None)
            if shaped(aggregate)
                && shaped(what)
                && version.len() > 1
                && version.starts_with('v')
                && version[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(aggregate)
        }
        _ => Err(EventsError::Invalid(format!(
            "event type {kind:?} is not emporium.<aggregate>.<what>.v<n>"
        ))),
    }
}

/// One event as the port carries it: the envelope's id and type, and the envelope itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    /// The CloudEvents `type`, which groups subscribe by.
    pub kind: String,
    /// The whole envelope, as JSON.
    pub body: String,
}

impl Event {
    pub fn validate(&self) -> Result<()> {
        // Ids go into keys, receipts and message attributes: printable ASCII, no spaces.
        if self.id.is_empty()
            || self.id.len() > 128
            || !self.id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(EventsError::Invalid(
                "an event id is 1 to 128 printable ASCII characters without spaces".into(),
            ));
        }
        topic_of(&self.kind)?;
        // Measured as stored: a store keeps the body as a JSON string, whose escapes can make
        // it several times longer than the body (a quote is two bytes, a control character six).
        let stored = serde_json::to_string(&self.body).map_or(usize::MAX, |json| json.len());
        if stored > MAX_EVENT_BYTES {
            return Err(EventsError::Invalid(format!(
                "event {} is {stored} bytes as stored; the limit is {MAX_EVENT_BYTES}",
                self.id
            )));
        }
        Ok(())
    }

    /// The bytes the event takes in a batch (its body and attributes), for batches with a size
    /// limit.
    pub fn size(&self) -> usize {
        self.body.len() + self.kind.len() + self.id.len() + 64
    }
}

/// Proof of one delivery, to acknowledge it or extend its visibility. A receipt from an earlier
/// delivery of the same event no longer acknowledges it once the event was delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt(pub String);

/// One delivery of an event to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event: Event,
    pub receipt: Receipt,
    /// 1 for the first delivery, 2 for the first redelivery, and so on.
    pub attempt: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A request the port cannot carry out as given (a programming error, not bad luck).
    #[error("invalid events request: {0}")]
    Invalid(String),
    /// A group no declaration names.
    #[error("no consumer group {0} is declared")]
    UnknownGroup(String),
    /// The receipt's delivery is over: the event was acknowledged or delivered again.
    #[error("the receipt no longer holds its event")]
    StaleReceipt,
    /// The backend failed. A publish that fails may still have reached some groups.
    #[error("events backend failed")]
    Backend(#[source] anyhow::Error),
}

pub type Result<T, E = EventsError> = std::result::Result<T, E>;

/// A bus of events with consumer groups. Every method may be called by any number of replicas
/// at once.
#[async_trait]
pub trait Events: Send + Sync + 'static {
    /// Publishes `events` to every group that receives their types. When it returns `Ok`, each
    /// event is durably queued for each of those groups; when it fails, some may be: publishing
    /// again is safe, since consumers deduplicate by id.
    async fn publish(&self, events: &[Event]) -> Result<()>;

    /// Up to `max` (1 to [`MAX_RECEIVE`]) events for `group`, waiting up to `wait` (whole
    /// seconds, at most [`MAX_WAIT`]) for a first one; each is hidden from the group's other
    /// receivers for the group's visibility timeout. Returns as soon as it has any.
    async fn receive(&self, group: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledges deliveries: their events are not delivered to the group again. A receipt
    /// whose delivery is over is ignored (the event is delivered again, or was acknowledged).
    async fn ack(&self, group: &str, receipts: &[Receipt]) -> Result<()>;

    /// Keeps a delivered event hidden for `hidden_for` from now, for a handler that needs
    /// longer than the group's visibility timeout.
    async fn extend(&self, group: &str, receipt: &Receipt, hidden_for: Duration) -> Result<()>;

    /// Up to `max` of the group's dead letters, oldest first, without moving them.
    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<Event>>;

    /// Puts every dead letter of the group back in its queue, as new (attempt 1); how many.
    async fn redrive(&self, group: &str) -> Result<usize>;

    /// Whether the backend answers.
    async fn ping(&self) -> Result<()>;
}

/// Milliseconds since the epoch: the clock of visibility timeouts, leases and recorded events.
pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A sort key in time order and unique by id: `<epoch ms, 16 digits>#<id>`.
pub(crate) fn timed_key(ms: u64, id: &str) -> String {
    format!("{ms:016}#{id}")
}

/// The epoch milliseconds at the front of a [`timed_key`].
pub(crate) fn timed_key_ms(key: &str) -> Option<u64> {
    key.split_once('#').and_then(|(ms, _)| ms.parse().ok())
}

/// Checks the arguments of [`Events::receive`], as every adapter does.
pub fn validate_receive(max: usize, wait: Duration) -> Result<()> {
    if !(1..=MAX_RECEIVE).contains(&max) {
        return Err(EventsError::Invalid(format!(
            "receive takes 1 to {MAX_RECEIVE} events at a time"
        )));
    }
    if wait > MAX_WAIT {
        return Err(EventsError::Invalid(format!(
            "receive waits at most {} s",
            MAX_WAIT.as_secs()
        )));
    }
    Ok(())
}

/// Checks an extension's length, as every adapter does.
pub fn validate_extension(hidden_for: Duration) -> Result<()> {
    if hidden_for > MAX_VISIBILITY || hidden_for.subsec_nanos() != 0 {
        return Err(EventsError::Invalid(
            "an extension is whole seconds, at most 12 h".into(),
        ));
    }
    Ok(())
}

/// Checks a set of group declarations: each valid, names unique.
pub fn validate_groups(groups: &[GroupDef]) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for group in groups {
        group.validate()?;
        if !names.insert(group.name) {
            return Err(EventsError::Invalid(format!(
                "group {} is declared twice",
                group.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_the_aggregates_of_well_formed_types() {
        assert_eq!(topic_of("emporium.order.confirmed.v1").ok(), Some("order"));
        assert_eq!(topic_of("emporium.stock.sold_out.v12").ok(), Some("stock"));
        for bad in [
            "",
            "order.confirmed.v1",
            "emporium.order.confirmed",
            "emporium.order.confirmed.1",
            "emporium.order.confirmed.v",
            "emporium.Order.confirmed.v1",
            "emporium.order.confirmed.v1.extra",
            "emporium..confirmed.v1",
        ] {
            assert!(topic_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn group_declarations_are_checked() {
        let good = GroupDef {
            name: "inventory-orders",
            types: &["emporium.order.confirmed.v1", "emporium.order.cancelled.v1"],
            visibility: Duration::from_secs(30),
            max_attempts: 5,
        };
        assert!(good.validate().is_ok());
        assert_eq!(good.topics(), vec!["order"]);
        for bad in [
            GroupDef { name: "", ..good },
            GroupDef {
                name: "Inventory",
                ..good
            },
            GroupDef { types: &[], ..good },
            GroupDef {
                types: &["order.confirmed"],
                ..good
            },
            GroupDef {
                visibility: Duration::ZERO,
                ..good
            },
            GroupDef {
                visibility: Duration::from_millis(1500),
                ..good
            },
            GroupDef {
                max_attempts: 0,
                ..good
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(validate_groups(&[good, good]).is_err());
    }
}
