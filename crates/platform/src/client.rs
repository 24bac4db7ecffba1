//! The outbound HTTP client: every call between services has a connect timeout and a
//! whole-request timeout, and carries the current request id and trace context so one request
//! can be followed through every service.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};

use crate::request_id;

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Sent on every call as `X-Emporium-Gateway`, to show the callee the call comes from one
    /// of the shop's services.
    pub gateway_key: Option<secrecy::SecretString>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            gateway_key: None,
        }
    }
}

/// A connection-pooling client with the timeouts applied.
pub fn build_client(settings: &ClientSettings) -> reqwest::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &settings.gateway_key
        && let Ok(mut value) =
            reqwest::header::HeaderValue::from_str(secrecy::ExposeSecret::expose_secret(key))
    {
        value.set_sensitive(true);
        headers.insert(crate::auth::GATEWAY_HEADER, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("emporium/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A client for one service at one base URL.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    base_url: String,
    http: reqwest::Client,
}

impl ServiceClient {
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Self { base_url, http }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A request to `path` (starting with `/`) with the propagation headers set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        propagate(builder)
    }
}

/// Adds the current request id and trace context to an outbound request.
pub fn propagate(mut builder: RequestBuilder) -> RequestBuilder {
    if let Some(id) = request_id::current() {
        builder = builder.header(request_id::HEADER.as_str(), id);
    }
    for (name, value) in crate::telemetry::propagation_headers() {
        builder = builder.header(name, value);
    }
    builder
}
