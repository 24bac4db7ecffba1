//! What every service's HTTP tests share (feature `testsuite`): settings for a server on a free
//! loopback port, a handle that stops the server when the test ends, a client that speaks to it
//! as a stranger, an admin or one of the shop's services, and typed problem assertions.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};

use crate::auth::{GATEWAY_HEADER, GatewayKey};
use crate::problem::{PROBLEM_JSON, Problem, ProblemCode};
use crate::server::{HttpSettings, RunningServer};

/// Settings of a service under test: loopback, a free port, two workers, a small body limit and
/// a quick stop.
pub fn http_settings() -> HttpSettings {
    HttpSettings {
        workers: Some(2),
        body_limit_bytes: 16 * 1024,
        shutdown_timeout: Duration::from_secs(5),
        ..HttpSettings::loopback()
    }
}

/// The same, for a service whose routes for the shop's services want `gateway_key`.
pub fn http_settings_with_gateway(gateway_key: &str) -> HttpSettings {
    HttpSettings {
        gateway_key: Some(GatewayKey::new(gateway_key)),
        ..http_settings()
    }
}

/// A running service, stopped when dropped (without waiting: the test's runtime is ending).
pub struct Spawned {
    url: String,
    server: Option<RunningServer>,
}

impl Spawned {
    pub fn new(server: RunningServer) -> Self {
        Self {
            url: server.url(),
            server: Some(server),
        }
    }

    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops it now; a graceful stop returns once its workers are gone.
    pub async fn stop(mut self, graceful: bool) {
        if let Some(server) = self.server.take() {
            server.stop(graceful).await.expect("the server stops");
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.handle().stop(false));
        }
    }
}

/// A client of one service: requests to paths of its base URL, with the admin key or as a
/// stranger; it shows the gateway key on every request when made with one.
#[derive(Clone)]
pub struct TestClient {
    base: String,
    http: reqwest::Client,
    stranger: reqwest::Client,
    admin_key: Option<String>,
}

impl TestClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            stranger: reqwest::Client::new(),
            admin_key: None,
        }
    }

    /// Shows `key` on every request but the stranger's, as the shop's services do.
    pub fn with_gateway(mut self, key: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(key).expect("a header value");
        headers.insert(GATEWAY_HEADER, value);
        self.http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        self
    }

    /// The key [`Self::admin`] sends.
    pub fn with_admin_key(mut self, key: &str) -> Self {
        self.admin_key = Some(key.to_owned());
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with the admin key.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let key = self.admin_key.as_deref().expect("made with an admin key");
        self.request(method, path).bearer_auth(key)
    }

    /// A request without the gateway key, as from outside the shop.
    pub fn stranger(&self, method: Method, path: &str) -> RequestBuilder {
        self.stranger.request(method, self.url(path))
    }

    /// GETs `path`, asserts 200 and reads the JSON body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.request(Method::GET, path).send().await.expect("send");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.expect("json")
    }
}

/// Asserts that `response` is the problem `code` with `status`, served as problem+json with the
/// request's id, and returns it. `code` must be one of [`ProblemCode`]'s, so a test cannot wait
/// for a code no service sends.
pub async fn expect_problem(response: reqwest::Response, status: u16, code: &str) -> Problem {
    let expected = ProblemCode::from_wire(code);
    assert!(
        !matches!(expected, ProblemCode::Other(_)),
        "{code} is not a problem code"
    );
    assert_eq!(response.status().as_u16(), status, "expected {code}");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, PROBLEM_JSON, "expected {code}");
    let problem: Problem = response.json().await.expect("problem body");
    assert_eq!(problem.code, expected);
    assert!(
        problem.request_id.is_some(),
        "{code} carries the request id"
    );
    problem
}
