//! Per-client rate limiting at the edge: each client gets a bucket of `burst` requests that
//! refills at `per_second` (the generic cell rate algorithm of the `governor` crate); a client
//! that empties it gets 429 `rate_limited` with `Retry-After`, and the shop keeps serving
//! everyone else.
//!
//! Who the client is:
//! - by default, the connection's peer;
//! - behind proxies that append the address they saw to `X-Forwarded-For`
//!   (`--trusted-proxies`), the address the nearest untrusted hop was seen at: with a count of
//!   proxies, that many entries from the right (every line of the header, in order, as one
//!   list); with networks, the right-most entry outside them, and only when the peer itself is
//!   one of them. Entries further left are whatever the client sent, so a client cannot choose
//!   its own key by sending the header itself. `host:port` and `[v6]:port` entries are read as
//!   their address.
//!
//! An IPv6 client is counted by its /64, the block one subscriber is given: per address, one
//! subscriber would have 2^64 buckets. A client on this machine (a loopback peer, not a
//! forwarded loopback address) is not limited: a load test run next to the shop is the
//! operator's, and the limit is there for strangers.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use emporium_platform::Problem;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

/// Which proxies in front of the storefront are believed about the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustedProxies {
    /// None: the client is the connection's peer.
    #[default]
    None,
    /// This many proxies, each appending the address it saw to `X-Forwarded-For`.
    Hops(NonZeroUsize),
    /// Proxies at these networks; the peer must be one of them.
    Networks(Vec<IpNet>),
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// `""` or `0` (none), a count of proxies (`1`), or addresses and networks
    /// (`10.0.0.0/8,fd00::/8,192.0.2.7`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::None);
        }
        if let Ok(hops) = text.parse::<usize>() {
            return Ok(NonZeroUsize::new(hops).map_or(Self::None, Self::Hops));
        }
        text.split(',')
            .map(|part| {
                let part = part.trim();
                part.parse::<IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{part}` is neither a count of proxies, an address nor a network (10.0.0.0/8)"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Networks)
    }
}

/// A client as the limiter counts it, and whether its address came from a proxy's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Client {
    address: IpAddr,
    forwarded: bool,
}

/// The limiter and how to find the client.
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    proxies: TrustedProxies,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32, proxies: TrustedProxies) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
        Some(Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            proxies,
        })
    }

    /// Forgets clients whose buckets are full again, so the table holds only recent clients;
    /// run it now and then.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How long `client` must wait, if it is over its limit.
    fn wait(&self, client: Client) -> Option<Duration> {
        if client.address.is_loopback() && !client.forwarded {
            return None;
        }
        self.limiter
            .check_key(&bucket(client.address))
            .err()
            .map(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    fn client(&self, req: &ServiceRequest) -> Option<Client> {
        let peer = req.peer_addr().map(|addr| addr.ip().to_canonical())?;
        Some(match forwarded_client(&self.proxies, peer, req.headers()) {
            Forwarded::No => Client {
                address: peer,
                forwarded: false,
            },
            Forwarded::Client(address) => Client {
                address,
                forwarded: true,
            },
            // Counted as the peer, but never exempt: a loopback proxy in front of the shop
            // must not make junk in the header a way around the limit.
            Forwarded::Unreadable => Client {
                address: peer,
                forwarded: true,
            },
        })
    }
}

/// What the trusted proxies' `X-Forwarded-For` entries say about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forwarded {
    /// Nothing to go by: no trusted proxies, no entries, or a peer that is no trusted proxy.
    No,
    Client(IpAddr),
    /// The entry that should name the client is no address.
    Unreadable,
}

/// The client's address by the trusted proxies' `X-Forwarded-For` entries.
fn forwarded_client(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> Forwarded {
    if *proxies == TrustedProxies::None {
        return Forwarded::No;
    }
    // Every line of the header, in order: a proxy that adds a line of its own rather than
    // appending to the client's must not leave the client's line as the one read.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        // A header with nothing in it says nothing a proxy wrote.
        return if headers.contains_key("x-forwarded-for") {
            Forwarded::Unreadable
        } else {
            Forwarded::No
        };
    }
    let read = |entry: &str| address(entry).map_or(Forwarded::Unreadable, Forwarded::Client);
    match proxies {
        TrustedProxies::None => Forwarded::No,
        TrustedProxies::Hops(hops) => {
            // The nearest `hops` proxies appended the last `hops` entries; the farthest of
            // those saw the client. Fewer entries than proxies: the farthest there is.
            let at = entries.len().saturating_sub(hops.get());
            entries.get(at).map_or(Forwarded::No, |entry| read(entry))
        }
        TrustedProxies::Networks(networks) => {
            let trusted = |address: &IpAddr| networks.iter().any(|net| net.contains(address));
            if !trusted(&peer) {
                // Not from a trusted proxy: the header is the client's own word.
                return Forwarded::No;
            }
            let mut nearest = Forwarded::No;
            for entry in entries.iter().rev() {
                match read(entry) {
                    Forwarded::Client(found) if trusted(&found) => {
                        nearest = Forwarded::Client(found)
                    }
                    other => return other,
                }
            }
            // Every hop is trusted: the farthest one is as near the client as can be told.
            nearest
        }
    }
}

/// An entry of `X-Forwarded-For`: an address, `address:port`, `[v6 address]` or
/// `[v6 address]:port`, a v6 address's zone (`%eth0`) left out.
fn address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_start_matches('[');
    let entry = entry.split_once(']').map_or(entry, |(inside, _)| inside);
    let entry = entry.split_once('%').map_or(entry, |(address, _)| address);
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// The key a client is counted under: an IPv4 address, or an IPv6 address's /64.
fn bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
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
            emporium_platform::ProblemCode::RateLimited,
            "Too many requests",
        )
        .with_detail(format!("slow down; try again in {seconds} s"))
        .with_retry_after_secs(seconds);
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
    use actix_web::http::header::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn direct(text: &str) -> Client {
        Client {
            address: ip(text),
            forwarded: false,
        }
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(
                header::HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(line).expect("value"),
            );
        }
        map
    }

    fn hops(n: usize) -> TrustedProxies {
        TrustedProxies::Hops(NonZeroUsize::new(n).expect("non-zero"))
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_while_others_and_loopback_go_on() {
        let limit = RateLimit::new(2, 5, TrustedProxies::None).expect("a limit");
        let client = direct("203.0.113.7");
        for _ in 0..5 {
            assert_eq!(limit.wait(client), None);
        }
        let wait = limit.wait(client).expect("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(limit.wait(direct("198.51.100.1")), None);
        for _ in 0..100 {
            assert_eq!(limit.wait(direct("127.0.0.1")), None);
        }
        assert!(
            RateLimit::new(0, 10, TrustedProxies::None).is_none(),
            "0 means no limit"
        );
    }

    #[test]
    fn a_forwarded_loopback_address_is_limited_like_any_other() {
        let limit = RateLimit::new(1, 2, hops(1)).expect("a limit");
        let claimed = Client {
            address: ip("127.0.0.1"),
            forwarded: true,
        };
        assert_eq!(limit.wait(claimed), None);
        assert_eq!(limit.wait(claimed), None);
        assert!(limit.wait(claimed).is_some(), "no exemption by header");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_v4_is_v4() {
        let limit = RateLimit::new(1, 3, TrustedProxies::None).expect("a limit");
        for n in 0..3 {
            assert_eq!(limit.wait(direct(&format!("2001:db8:1:2::{n:x}"))), None);
        }
        assert!(
            limit.wait(direct("2001:db8:1:2:ffff::1")).is_some(),
            "another address of the same /64 is the same client"
        );
        assert_eq!(
            limit.wait(direct("2001:db8:1:3::1")),
            None,
            "the next /64 is another"
        );
        assert_eq!(address("::ffff:198.51.100.9"), Some(ip("198.51.100.9")));
    }

    #[test]
    fn the_client_is_the_entry_the_trusted_hops_appended_whatever_the_client_sent() {
        let peer = ip("10.0.0.5");
        let one = hops(1);
        let client = |proxies: &TrustedProxies, lines: &[&str]| {
            forwarded_client(proxies, peer, &headers(lines))
        };
        // The balancer appended the address it saw to what the client sent.
        assert_eq!(
            client(&one, &["127.0.0.1, 198.51.100.1, 203.0.113.9"]),
            Forwarded::Client(ip("203.0.113.9"))
        );
        // A balancer that adds its own line: the lines are one list, in order.
        assert_eq!(
            client(&one, &["127.0.0.1", "203.0.113.9"]),
            Forwarded::Client(ip("203.0.113.9"))
        );
        // Two proxies: a CDN, then the balancer.
        assert_eq!(
            client(&hops(2), &["6.6.6.6, 203.0.113.9, 192.0.2.1"]),
            Forwarded::Client(ip("203.0.113.9"))
        );
        // Addresses with ports or zones, as some balancers write them.
        for (entry, expected) in [
            ("203.0.113.9:51234", "203.0.113.9"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
            ("fe80::1%eth0", "fe80::1"),
        ] {
            assert_eq!(
                client(&one, &[entry]),
                Forwarded::Client(ip(expected)),
                "{entry}"
            );
        }
        // Nothing to go by: the peer. Junk where the proxy writes: the peer, not exempt.
        assert_eq!(client(&one, &[]), Forwarded::No);
        assert_eq!(client(&one, &[""]), Forwarded::Unreadable);
        assert_eq!(client(&one, &[" , "]), Forwarded::Unreadable);
        for junk in [
            "unknown",
            "localhost",
            "0203.0.0113.077",
            "3405803853",
            "_hidden",
        ] {
            assert_eq!(client(&one, &[junk]), Forwarded::Unreadable, "{junk}");
        }
        assert_eq!(
            client(&TrustedProxies::None, &["203.0.113.9"]),
            Forwarded::No
        );
    }

    #[test]
    fn with_networks_only_a_trusted_peer_is_believed_and_trusted_hops_are_skipped() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.1".parse().expect("networks");
        let via = headers(&["6.6.6.6, 203.0.113.9, 10.1.2.3"]);
        assert_eq!(
            forwarded_client(&proxies, ip("192.0.2.1"), &via),
            Forwarded::Client(ip("203.0.113.9"))
        );
        // A client connecting directly says what it likes: not believed.
        assert_eq!(
            forwarded_client(&proxies, ip("198.51.100.1"), &via),
            Forwarded::No
        );
        // Every hop trusted: the farthest; junk before a trusted hop: unreadable.
        assert_eq!(
            forwarded_client(&proxies, ip("10.0.0.1"), &headers(&["10.9.9.9"])),
            Forwarded::Client(ip("10.9.9.9"))
        );
        assert_eq!(
            forwarded_client(&proxies, ip("10.0.0.1"), &headers(&["junk, 10.9.9.9"])),
            Forwarded::Unreadable
        );
    }

    #[test]
    fn trusted_proxies_parse_from_a_count_or_networks() {
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::None));
        assert_eq!("0".parse::<TrustedProxies>(), Ok(TrustedProxies::None));
        assert_eq!("2".parse::<TrustedProxies>(), Ok(hops(2)));
        assert!(matches!(
            "10.0.0.0/8,fd00::/8".parse::<TrustedProxies>(),
            Ok(TrustedProxies::Networks(nets)) if nets.len() == 2
        ));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.example".parse::<TrustedProxies>().is_err());
    }
}
