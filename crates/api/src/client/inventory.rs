use emporium_platform::faults::{Dependency, FaultSwitches};
use reqwest::Method;

use super::{ClientError, Endpoint, Idempotent, RetryPolicy, segment};
use crate::inventory::{NewReservation, Reservation, SetStock, StockLevel, StockPage};

/// Client of the inventory service.
#[derive(Debug, Clone)]
pub struct InventoryClient {
    endpoint: Endpoint,
}

impl InventoryClient {
    pub fn new(base_url: &str, http: reqwest::Client, retry: RetryPolicy) -> Self {
        Self {
            endpoint: Endpoint::new(Dependency::service("inventory"), base_url, http, retry),
        }
    }

    /// Fails its calls while the calling service's `faults` cut it off from the inventory service.
    pub fn with_faults(self, faults: &FaultSwitches) -> Self {
        Self {
            endpoint: self.endpoint.with_faults(faults),
        }
    }

    pub async fn stock(&self, sku: &str) -> Result<StockLevel, ClientError> {
        let path = format!("/v1/stock/{}", segment(sku));
        let (_, level) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::GET, &path)
            })
            .await?;
        Ok(level)
    }

    /// Stock of up to 100 SKUs; unknown SKUs are left out.
    pub async fn stocks(&self, skus: &[&str]) -> Result<Vec<StockLevel>, ClientError> {
        let list = skus.join(",");
        let (_, page): (_, StockPage) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::GET, "/v1/stock")
                    .query(&[("skus", list.as_str())])
            })
            .await?;
        Ok(page.items)
    }

    /// Sets a SKU's available units (admin). Idempotent: it sets, it does not add.
    pub async fn set_stock(
        &self,
        sku: &str,
        available: i64,
        admin_key: &str,
    ) -> Result<StockLevel, ClientError> {
        let path = format!("/v1/stock/{}", segment(sku));
        let (_, level) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::PUT, &path)
                    .bearer_auth(admin_key)
                    .json(&SetStock { available })
            })
            .await?;
        Ok(level)
    }

    /// Reserves every line or none. Retried safely: the id makes it idempotent.
    pub async fn reserve(&self, reservation: &NewReservation) -> Result<Reservation, ClientError> {
        let (_, reservation) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::POST, "/v1/reservations")
                    .json(reservation)
            })
            .await?;
        Ok(reservation)
    }

    pub async fn reservation(&self, id: &str) -> Result<Reservation, ClientError> {
        let path = format!("/v1/reservations/{}", segment(id));
        let (_, reservation) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::GET, &path)
            })
            .await?;
        Ok(reservation)
    }

    /// Held → sold.
    pub async fn commit(&self, id: &str) -> Result<Reservation, ClientError> {
        self.transition(id, "commit").await
    }

    /// Held → available.
    pub async fn release(&self, id: &str) -> Result<Reservation, ClientError> {
        self.transition(id, "release").await
    }

    /// Sold → available (a cancelled order).
    pub async fn return_stock(&self, id: &str) -> Result<Reservation, ClientError> {
        self.transition(id, "return").await
    }

    async fn transition(&self, id: &str, action: &str) -> Result<Reservation, ClientError> {
        let path = format!("/v1/reservations/{}/{action}", segment(id));
        let (_, reservation) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::POST, &path)
            })
            .await?;
        Ok(reservation)
    }
}

impl super::Circuit for InventoryClient {
    fn circuit(&self) -> (&'static str, bool) {
        self.endpoint.circuit()
    }
}
