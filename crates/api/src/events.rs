//! Events between services: what happened to a product, a SKU's stock or an order, told to
//! whoever listens, in a CloudEvents 1.0 envelope in JSON (the structured content mode).
//!
//! Every event's `type` is `emporium.<aggregate>.<what>.v<n>` ([`EventType`]), its `subject` the
//! aggregate's id (a product id, a SKU, an order id), its `source` the producing service
//! (`/emporium/<service>`), and it carries the producer's `traceparent` (the distributed-tracing
//! extension) so a consumer's span continues the trace that caused the event. The data types
//! below are the wire contract, documented field by field in `docs/EVENTS.md`; a change that is
//! not additive gets a new version of the type, never a new meaning for an old one.
//!
//! Events carry the aggregate's state after the change (not only "it changed") together with
//! its `version`, so a consumer can apply them idempotently and in any order: it keeps what it
//! has when an event's version is not newer. Card data never appears in an event.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::catalog::{Category, Product};
use crate::order::{OrderFailure, OrderLine, OrderStatus, Totals};

/// The CloudEvents version of every envelope.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of every envelope's `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// Declares the event types: each variant, its `type` string, the aggregate it is about and the
/// service that produces it, from one list.
macro_rules! event_types {
    ($($variant:ident => $name:literal, $aggregate:literal, $producer:literal;)+) => {
        /// Every kind of event, by its CloudEvents `type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($variant,)+
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)+];

            /// The CloudEvents `type`, such as `emporium.order.confirmed.v1`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)+
                }
            }

            /// What the event is about: `product`, `category`, `stock` or `order`.
            pub const fn aggregate(self) -> &'static str {
                match self {
                    $(EventType::$variant => $aggregate,)+
                }
            }

            /// The service that produces it, which is also the topic it is published on.
            pub const fn producer(self) -> &'static str {
                match self {
                    $(EventType::$variant => $producer,)+
                }
            }
        }
    };
}

event_types! {
    ProductCreated => "emporium.product.created.v1", "product", "catalog";
    ProductUpdated => "emporium.product.updated.v1", "product", "catalog";
    ProductDeleted => "emporium.product.deleted.v1", "product", "catalog";
    CategoryChanged => "emporium.category.changed.v1", "category", "catalog";
    StockChanged => "emporium.stock.changed.v1", "stock", "inventory";
    StockSoldOut => "emporium.stock.sold_out.v1", "stock", "inventory";
    StockBackInStock => "emporium.stock.back_in_stock.v1", "stock", "inventory";
    OrderPlaced => "emporium.order.placed.v1", "order", "order";
    OrderConfirmed => "emporium.order.confirmed.v1", "order", "order";
    OrderFailed => "emporium.order.failed.v1", "order", "order";
    OrderCancelled => "emporium.order.cancelled.v1", "order", "order";
}

/// The types of an order's settling: what the inventory and the cart do after the checkout
/// (sell or return the stock; clear or free the cart) follows from these two.
pub const ORDER_SETTLED: &[&str] = &[
    EventType::OrderConfirmed.as_str(),
    EventType::OrderCancelled.as_str(),
];

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `type` no version of Emporium produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownEventType(name.to_owned()))
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One event as it travels: the CloudEvents attributes and the data, still as JSON so that a
/// relay or a dead-letter queue can carry an event of a type it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// Unique per event, unguessable; consumers deduplicate by it.
    pub id: String,
    /// The producing service, as `/emporium/<service>`.
    pub source: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The aggregate's id: a product id, a category slug, a SKU or an order id.
    pub subject: String,
    /// When the change that caused the event was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Always [`DATA_CONTENT_TYPE`].
    pub datacontenttype: String,
    /// The W3C trace context of the change, when it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: serde_json::Value,
}

/// The data of one type of event: the type it is sent as and the aggregate it is about.
pub trait EventData: Serialize + DeserializeOwned {
    /// The event's subject: the aggregate's id.
    fn subject(&self) -> String;
}

/// An envelope whose type or data do not agree with what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the envelope holds {found}, not {wanted}")]
    OtherType {
        found: EventType,
        wanted: &'static str,
    },
    #[error("the data of {kind} does not match its schema: {source}")]
    Data {
        kind: EventType,
        source: serde_json::Error,
    },
    #[error("not a CloudEvents envelope: {0}")]
    Envelope(#[from] serde_json::Error),
}

impl Envelope {
    /// An envelope for `data` as `kind`, from `producer`, with a new id, stamped now.
    pub fn new<T: EventData>(
        producer: &str,
        kind: EventType,
        data: &T,
        traceparent: Option<String>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            specversion: SPEC_VERSION.to_owned(),
            id: emporium_platform::id::new_id(),
            source: format!("/emporium/{producer}"),
            kind,
            subject: data.subject(),
            time: OffsetDateTime::now_utc(),
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            traceparent,
            data: serde_json::to_value(data)?,
        })
    }

    /// [`Envelope::new`], carrying the trace context of the current span (or the not-sampled
    /// `traceparent` of a request that is not traced).
    pub fn traced<T: EventData>(
        producer: &str,
        kind: EventType,
        data: &T,
    ) -> Result<Self, serde_json::Error> {
        let traceparent = emporium_platform::telemetry::propagation_headers()
            .into_iter()
            .find_map(|(name, value)| (name == "traceparent").then_some(value));
        Self::new(producer, kind, data, traceparent)
    }

    /// The envelope as the events port carries it.
    pub fn to_event(&self) -> emporium_ports::events::Event {
        emporium_ports::events::Event {
            id: self.id.clone(),
            kind: self.kind.as_str().to_owned(),
            body: self.to_json(),
        }
    }

    /// Reads an envelope from its JSON.
    pub fn from_json(body: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(body)?)
    }

    pub fn to_json(&self) -> String {
        // A Value-based envelope always serialises: its keys are strings.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The data as `T`, when the envelope is one of `kinds`.
    pub fn decode<T: EventData>(&self, kinds: &'static [EventType]) -> Result<T, DecodeError> {
        if !kinds.contains(&self.kind) {
            return Err(DecodeError::OtherType {
                found: self.kind,
                wanted: std::any::type_name::<T>(),
            });
        }
        serde_json::from_value(self.data.clone()).map_err(|source| DecodeError::Data {
            kind: self.kind,
            source,
        })
    }
}

/// `emporium.product.created.v1` and `emporium.product.updated.v1`: the product as it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductChanged {
    pub product: Product,
}

impl EventData for ProductChanged {
    fn subject(&self) -> String {
        self.product.id.clone()
    }
}

/// `emporium.product.deleted.v1`: what a consumer needs to forget the product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductDeleted {
    pub id: String,
    pub sku: String,
    pub category: String,
    /// The version the product had when it was deleted.
    pub version: u64,
}

impl EventData for ProductDeleted {
    fn subject(&self) -> String {
        self.id.clone()
    }
}

/// `emporium.category.changed.v1`: a category created, renamed, moved or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CategoryChanged {
    pub category: Category,
    /// The category no longer exists; `category` is what it was.
    #[serde(default)]
    pub deleted: bool,
}

impl EventData for CategoryChanged {
    fn subject(&self) -> String {
        self.category.slug.clone()
    }
}

/// `emporium.stock.changed.v1`, `emporium.stock.sold_out.v1` (`available` reached 0) and
/// `emporium.stock.back_in_stock.v1` (`available` rose from 0): a SKU's counters after the
/// change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockChanged {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Increases with every change of this SKU's counters.
    pub version: u64,
}

impl EventData for StockChanged {
    fn subject(&self) -> String {
        self.sku.clone()
    }
}

/// `emporium.order.placed.v1`, `.confirmed.v1`, `.failed.v1` and `.cancelled.v1`: the order's
/// lines, totals and customer id after the change; never the card or the customer's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderChanged {
    pub order_id: String,
    pub customer_id: String,
    /// The cart the order was checked out from (the cart's consumer clears the units bought
    /// from it, or ends the order's claim on it). Empty in events recorded before it was added.
    #[serde(default)]
    pub cart_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub totals: Totals,
    /// For failed and cancelled orders: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<OrderFailure>,
    /// Increases with every change of the order.
    pub version: u64,
}

impl EventData for OrderChanged {
    fn subject(&self) -> String {
        self.order_id.clone()
    }
}

impl OrderChanged {
    /// Units per SKU, as inventory and recommendations read an order.
    pub fn quantities(&self) -> BTreeMap<&str, i64> {
        let mut units = BTreeMap::new();
        for line in &self.lines {
            *units.entry(line.sku.as_str()).or_default() += line.quantity;
        }
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_named_by_its_aggregate_and_version_and_parses_back() {
        for kind in EventType::ALL {
            let name = kind.as_str();
            assert!(
                name.starts_with(&format!("emporium.{}.", kind.aggregate())),
                "{name}"
            );
            assert!(name.ends_with(".v1"), "{name}");
            assert_eq!(name.parse::<EventType>(), Ok(*kind));
        }
        assert!("emporium.order.shipped.v1".parse::<EventType>().is_err());
    }

    #[test]
    fn an_envelope_is_cloudevents_json_and_decodes_only_as_its_type() {
        let data = StockChanged {
            sku: "KIT-0001".into(),
            available: 0,
            reserved: 2,
            sold: 8,
            version: 11,
        };
        let envelope = Envelope::new(
            "inventory",
            EventType::StockSoldOut,
            &data,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        )
        .expect("envelope");
        let json: serde_json::Value = serde_json::from_str(&envelope.to_json()).expect("json");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "emporium.stock.sold_out.v1");
        assert_eq!(json["source"], "/emporium/inventory");
        assert_eq!(json["subject"], "KIT-0001");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["available"], 0);
        assert!(json["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let back = Envelope::from_json(envelope.to_json().as_bytes()).expect("parses");
        assert_eq!(back, envelope);
        let stock: StockChanged = back
            .decode(&[EventType::StockChanged, EventType::StockSoldOut])
            .expect("decodes");
        assert_eq!(stock, data);
        assert!(matches!(
            back.decode::<StockChanged>(&[EventType::StockChanged]),
            Err(DecodeError::OtherType { .. })
        ));
        assert!(matches!(
            back.decode::<ProductDeleted>(&[EventType::StockSoldOut]),
            Err(DecodeError::Data { .. })
        ));
    }
}
