use emporium_platform::faults::{Dependency, FaultSwitches};
use reqwest::Method;

use super::{ClientError, Endpoint, Idempotent, RetryPolicy, segment};
use crate::cart::{AddCartLine, Cart, ClaimCart, SetQuantity};

/// Client of the cart service.
#[derive(Debug, Clone)]
pub struct CartClient {
    endpoint: Endpoint,
}

impl CartClient {
    pub fn new(base_url: &str, http: reqwest::Client, retry: RetryPolicy) -> Self {
        Self {
            endpoint: Endpoint::new(Dependency::service("cart"), base_url, http, retry),
        }
    }

    /// Fails its calls while the calling service's `faults` cut it off from the cart service.
    pub fn with_faults(self, faults: &FaultSwitches) -> Self {
        Self {
            endpoint: self.endpoint.with_faults(faults),
        }
    }

    /// A new, empty cart. Not retried: a retry could make a second cart.
    pub async fn create(&self) -> Result<Cart, ClientError> {
        let (_, cart) = self
            .endpoint
            .call(Idempotent::No, || {
                self.endpoint.request(Method::POST, "/v1/carts")
            })
            .await?;
        Ok(cart)
    }

    /// The cart at `id`, made empty there if there is none (or it expired). Retried safely:
    /// the id makes it idempotent, so callers that choose the id (the storefront, with its
    /// session) get one cart however many ask at once.
    pub async fn open(&self, id: &str) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}", segment(id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::PUT, &path)
            })
            .await?;
        Ok(cart)
    }

    pub async fn cart(&self, id: &str) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}", segment(id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::GET, &path)
            })
            .await?;
        Ok(cart)
    }

    /// Adds to a line. Not retried: a retry could add twice.
    pub async fn add_line(&self, id: &str, line: &AddCartLine) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}/lines", segment(id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::No, || {
                self.endpoint.request(Method::POST, &path).json(line)
            })
            .await?;
        Ok(cart)
    }

    pub async fn set_quantity(
        &self,
        id: &str,
        product_id: &str,
        quantity: i64,
    ) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}/lines/{}", segment(id), segment(product_id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::PUT, &path)
                    .json(&SetQuantity { quantity })
            })
            .await?;
        Ok(cart)
    }

    pub async fn remove_line(&self, id: &str, product_id: &str) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}/lines/{}", segment(id), segment(product_id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::DELETE, &path)
            })
            .await?;
        Ok(cart)
    }

    /// Claims the cart at `version` for `order_id`'s checkout. Idempotent: the same order
    /// claiming again gets the cart it holds.
    pub async fn claim(&self, id: &str, order_id: &str, version: u64) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}/checkout", segment(id));
        let body = ClaimCart {
            order_id: order_id.to_owned(),
            version,
        };
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::PUT, &path).json(&body)
            })
            .await?;
        Ok(cart)
    }

    /// Takes the lines `order_id` claimed out of the cart and ends its claim. Idempotent: once
    /// done, it changes nothing.
    pub async fn complete_checkout(&self, id: &str, order_id: &str) -> Result<Cart, ClientError> {
        let path = format!(
            "/v1/carts/{}/checkout/{}/complete",
            segment(id),
            segment(order_id)
        );
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::POST, &path)
            })
            .await?;
        Ok(cart)
    }

    /// Ends `order_id`'s claim and leaves the lines. Idempotent, and nothing when the order
    /// holds no claim.
    pub async fn release_checkout(&self, id: &str, order_id: &str) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}/checkout/{}", segment(id), segment(order_id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::DELETE, &path)
            })
            .await?;
        Ok(cart)
    }

    /// Empties the cart; emptying an empty cart is fine.
    pub async fn clear(&self, id: &str) -> Result<Cart, ClientError> {
        let path = format!("/v1/carts/{}/lines", segment(id));
        let (_, cart) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::DELETE, &path)
            })
            .await?;
        Ok(cart)
    }
}

impl super::Circuit for CartClient {
    fn circuit(&self) -> (&'static str, bool) {
        self.endpoint.circuit()
    }
}
