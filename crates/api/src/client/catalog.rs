use emporium_platform::faults::{Dependency, FaultSwitches};
use reqwest::Method;

use super::{ClientError, Endpoint, Idempotent, RetryPolicy, segment};
use crate::catalog::{Category, Product, ProductPage, ProductQuery};

/// Client of the catalog service.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    endpoint: Endpoint,
}

impl CatalogClient {
    pub fn new(base_url: &str, http: reqwest::Client, retry: RetryPolicy) -> Self {
        Self {
            endpoint: Endpoint::new(Dependency::service("catalog"), base_url, http, retry),
        }
    }

    /// Fails its calls while the calling service's `faults` cut it off from the catalog service.
    pub fn with_faults(self, faults: &FaultSwitches) -> Self {
        Self {
            endpoint: self.endpoint.with_faults(faults),
        }
    }

    pub async fn product(&self, id: &str) -> Result<Product, ClientError> {
        let path = format!("/v1/products/{}", segment(id));
        let (_, product) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::GET, &path)
            })
            .await?;
        Ok(product)
    }

    pub async fn products(&self, query: &ProductQuery) -> Result<ProductPage, ClientError> {
        let (_, page) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint
                    .request(Method::GET, "/v1/products")
                    .query(query)
            })
            .await?;
        Ok(page)
    }

    pub async fn categories(&self) -> Result<Vec<Category>, ClientError> {
        let (_, categories) = self
            .endpoint
            .call(Idempotent::Yes, || {
                self.endpoint.request(Method::GET, "/v1/categories")
            })
            .await?;
        Ok(categories)
    }
}

impl super::Circuit for CatalogClient {
    fn circuit(&self) -> (&'static str, bool) {
        self.endpoint.circuit()
    }
}
