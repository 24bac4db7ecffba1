use emporium_platform::faults::{Dependency, FaultSwitches};
use reqwest::{Method, StatusCode};

use super::{ClientError, Endpoint, Idempotent, RetryPolicy, segment};
use crate::order::{
    CUSTOMER_HEADER, IDEMPOTENCY_HEADER, Order, OrderPage, PlaceOrder, REPLAY_ONLY_HEADER,
};

/// Client of the order service, acting for one customer per call.
#[derive(Debug, Clone)]
pub struct OrderClient {
    endpoint: Endpoint,
}

impl OrderClient {
    pub fn new(base_url: &str, http: reqwest::Client, retry: RetryPolicy) -> Self {
        Self {
            endpoint: Endpoint::new(Dependency::service("order"), base_url, http, retry),
        }
    }

    /// Fails its calls while the calling service's `faults` cut it off from the order service.
    pub fn with_faults(self, faults: &FaultSwitches) -> Self {
        Self {
            endpoint: self.endpoint.with_faults(faults),
        }
    }

    /// Places an order. Retried safely: the idempotency key makes a repeat return the same order.
    /// The status tells a new order (201) from a repeat (200) and an unfinished one (202).
    pub async fn place(
        &self,
        customer_id: &str,
        idempotency_key: &str,
        order: &PlaceOrder,
    ) -> Result<(StatusCode, Order), ClientError> {
        self.post_order(customer_id, idempotency_key, order, false)
            .await
    }

    /// The answer the first request under `idempotency_key` got, if it was `order`; never a
    /// new checkout (see [`REPLAY_ONLY_HEADER`]).
    pub async fn replay(
        &self,
        customer_id: &str,
        idempotency_key: &str,
        order: &PlaceOrder,
    ) -> Result<(StatusCode, Order), ClientError> {
        self.post_order(customer_id, idempotency_key, order, true)
            .await
    }

    async fn post_order(
        &self,
        customer_id: &str,
        idempotency_key: &str,
        order: &PlaceOrder,
        replay_only: bool,
    ) -> Result<(StatusCode, Order), ClientError> {
        self.endpoint
            .call(Idempotent::Yes, || {
                let request = self
                    .endpoint
                    .request(Method::POST, "/v1/orders")
                    .header(CUSTOMER_HEADER, customer_id)
                    .header(IDEMPOTENCY_HEADER, idempotency_key)
                    .json(order);
                if replay_only {
                    request.header(REPLAY_ONLY_HEADER, "true")
                } else {
                    request
                }
            })
            .await
    }

    pub async fn order(&self, customer_id: &str, id: &str) -> Result<Order, ClientError> {
        let path = format!("/v1/orders/{}", segment(id));
        let (_, order) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::GET, &path)
                    .header(CUSTOMER_HEADER, customer_id)
            })
            .await?;
        Ok(order)
    }

    /// The customer's orders, newest first.
    pub async fn orders(
        &self,
        customer_id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<OrderPage, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        let (_, page) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::GET, "/v1/orders")
                    .header(CUSTOMER_HEADER, customer_id)
                    .query(&query)
            })
            .await?;
        Ok(page)
    }

    pub async fn cancel(&self, customer_id: &str, id: &str) -> Result<Order, ClientError> {
        let path = format!("/v1/orders/{}/cancel", segment(id));
        let (_, order) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::POST, &path)
                    .header(CUSTOMER_HEADER, customer_id)
            })
            .await?;
        Ok(order)
    }
}

impl super::Circuit for OrderClient {
    fn circuit(&self) -> (&'static str, bool) {
        self.endpoint.circuit()
    }
}
