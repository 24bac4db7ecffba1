//! Per-client rate limiting at the edge: each client address gets a bucket of `burst` requests
//! that refills at `per_second` (the generic cell rate algorithm of the `governor` crate); a
//! client that empties it gets 429 `rate_limited` with `Retry-After`, and the shop keeps serving
//! everyone else.
//!
//! The client is the connection's peer, or, behind a load balancer that says so
//! (`--storefront-trust-forwarded`), the last address in `X-Forwarded-For`: the one the balancer
//! itself saw, which a client cannot forge (the ones before it are whatever the client sent).
//! Clients on this machine (loopback) are not limited: a load test run next to the shop is the
//! operator's, and the limit is there for strangers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, web};
use emporium_platform::Problem;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

/// The limiter and how to find the client.
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded: bool,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32, trust_forwarded: bool) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
        Some(Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            trust_forwarded,
        })
    }

    /// Forgets clients whose buckets are full again, so the table holds only recent clients;
    /// run it now and then.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How long `client` must wait, if it is over its limit.
    fn wait(&self, client: IpAddr) -> Option<Duration> {
        if client.is_loopback() {
            return None;
        }
        self.limiter
            .check_key(&client)
            .err()
            .map(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    fn client(&self, req: &ServiceRequest) -> Option<IpAddr> {
        if self.trust_forwarded
            && let Some(last) = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.rsplit(',').next())
                .and_then(|last| last.trim().parse().ok())
        {
            return Some(last);
        }
        req.peer_addr().map(|addr| addr.ip())
    }
}

/// Middleware: 429 with `Retry-After` for a client over its limit.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if let Some(limit) = req.app_data::<web::Data<RateLimit>>()
        && let Some(client) = limit.client(&req)
        && let Some(wait) = limit.wait(client)
    {
        // Whole seconds, rounded up: a client that waits what it is told gets through.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let problem = Problem::new(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
        )
        .with_detail(format!("slow down; try again in {seconds} s"))
        .with_extension("retry_after_secs", seconds);
        let mut response = problem.to_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_while_others_and_loopback_go_on() {
        let limit = RateLimit::new(2, 5, false).expect("a limit");
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        for _ in 0..5 {
            assert_eq!(limit.wait(client), None);
        }
        let wait = limit.wait(client).expect("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(limit.wait(other), None);
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..100 {
            assert_eq!(limit.wait(local), None);
        }
        assert!(RateLimit::new(0, 10, false).is_none(), "0 means no limit");
    }
}
