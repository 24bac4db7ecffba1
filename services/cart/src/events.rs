//! The cart's consumer of order events (the `cart-orders` group): `order.confirmed` takes the
//! units the order bought out of its cart and ends its claim, `order.cancelled` ends the claim
//! and keeps the lines (a cancellation applied before its confirmation leaves the cart as it
//! was, and the late confirmation then finds no claim of that order and does nothing).
//!
//! It needs no per-order ordering: both act only while the order named holds the cart's claim,
//! and the write is conditional on the cart's version as read, so a cart changed meanwhile
//! (a shopper's add, another replica's delivery) fails the transaction and the event comes back
//! to be decided again on the new cart.

use std::sync::Arc;

use async_trait::async_trait;
use emporium_api::events::{Envelope, EventType, ORDER_SETTLED, OrderChanged};
use emporium_ports::events::consumer::{Consumer, Handler, Outcome};
use emporium_ports::events::{Event, Events, GroupDef};

use crate::repository::TABLE;
use crate::service::Carts;

/// The consumer group that clears and frees the carts of orders.
pub const ORDERS: GroupDef = GroupDef::standard("cart-orders", ORDER_SETTLED);

/// Every group the cart runs.
pub const GROUPS: &[GroupDef] = &[ORDERS];

struct OrderEvents {
    carts: Arc<Carts>,
}

impl OrderEvents {
    async fn outcome(&self, event: &Event) -> Result<Outcome, String> {
        let envelope = Envelope::from_json(event.body.as_bytes()).map_err(|e| e.to_string())?;
        let order: OrderChanged = envelope
            .decode(&[EventType::OrderConfirmed, EventType::OrderCancelled])
            .map_err(|e| e.to_string())?;
        let complete = envelope.kind == EventType::OrderConfirmed;
        let write = self
            .carts
            .settle_order(&order.cart_id, &order.order_id, complete)
            .await
            .map_err(|e| e.to_string())?;
        // No cart (it expired) or no claim of this order on it: nothing to do.
        let Some(write) = write else {
            return Ok(Outcome::Skip);
        };
        let carts = self.carts.clone();
        let cart_id = order.cart_id;
        Ok(Outcome::ApplyThen(
            vec![write],
            Box::new(move || Box::pin(async move { carts.retire(&cart_id).await })),
        ))
    }
}

#[async_trait]
impl Handler for OrderEvents {
    async fn handle(&self, event: &Event) -> Outcome {
        self.outcome(event).await.into()
    }
}

/// The cart's consumer of order events over `carts`' store.
pub fn order_consumer(carts: Arc<Carts>, events: Arc<dyn Events>) -> Consumer {
    let storage = carts.storage().clone();
    Consumer::new(
        events,
        storage,
        TABLE,
        ORDERS,
        Arc::new(OrderEvents { carts }),
    )
    .traced(Arc::new(|event| {
        emporium_platform::telemetry::consumer_span("cart", ORDERS.name, event)
    }))
}
