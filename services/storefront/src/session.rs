//! The visitor's session: a cookie signed with HMAC-SHA256 (the `cookie` crate's signed jar),
//! carrying the customer id, the cart id, the CSRF token and when it was issued. No session
//! state lives on the server, so any replica can serve any request. A cookie whose signature
//! does not verify is ignored and the visitor starts a fresh session.
//!
//! The cart id is chosen with the session, before any cart exists; the first add creates the
//! cart at that id. So every request of one session names one cart: when a session's first
//! adds arrived at once, each used to make a cart of its own and answer 200 with its own
//! cookie, and all but the one the client kept were lost.
//!
//! A checkout that confirms pays for the session's cart and gives the session a new one, so the
//! next page shows an empty cart at once while the cart service clears the paid one from the
//! order's event, at the bus's pace. The paid cart's id stays in the session, so a repeat of
//! that checkout (a reload, a retried request) still names the order it placed.
//!
//! A session lasts `--session-lifetime-secs` from its last use: the issue time is part of the
//! signed value, a cookie older than the lifetime is refused (the visitor starts afresh), and a
//! session in use is issued again, at most once a minute, so a shopper who keeps coming back
//! keeps it. A copied cookie therefore stops reading the order history (names, emails,
//! addresses) once it goes unused for the lifetime, rather than for as long as the key lives.
//!
//! Forms that change state are protected twice: the browser must not mark the request as
//! cross-site (`Sec-Fetch-Site`, `Origin`), and the form must carry the session's CSRF token.

use std::cell::RefCell;
use std::rc::Rc;

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, web};
use emporium_platform::id;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// Name of the session cookie.
pub const COOKIE: &str = "emporium_session";

/// How long a session lasts from its last use unless configured: a week, the cart's lifetime.
pub const DEFAULT_LIFETIME: time::Duration = time::Duration::days(7);

/// A session in use is issued again once it is this old (or half its lifetime, if shorter), so
/// an active shopper's cookie does not change on every page.
const ROLL_AFTER: time::Duration = time::Duration::minutes(1);

/// How far in the future an issue time may be, for replicas whose clocks differ a little.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Shortest accepted signing secret: HMAC-SHA256 wants at least 256 bits of key.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub customer_id: String,
    /// The session's cart, which exists from the first add on.
    pub cart_id: String,
    pub csrf: String,
    /// When the cookie was issued, in Unix seconds.
    pub issued: i64,
    /// Whether the cart has been made, so far as this copy of the session knows: until then, a
    /// page's cart badge needs no call to the cart service.
    pub cart_made: bool,
    /// The cart the session's last confirmed checkout paid for, which a repeat of that
    /// checkout names.
    pub paid_cart_id: Option<String>,
}

impl Session {
    fn fresh(now: OffsetDateTime) -> Self {
        Self {
            customer_id: id::new_id(),
            cart_id: id::new_id(),
            csrf: id::new_id(),
            issued: now.unix_timestamp(),
            cart_made: false,
            paid_cart_id: None,
        }
    }

    /// `customer.cart.csrf.issued.made.paid`: ids are base32, the time is digits, the cart's
    /// state `c` (made) or `-`, and the paid cart an id or `-`, so the value needs no quoting
    /// in a cookie.
    fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}.{}",
            self.customer_id,
            self.cart_id,
            self.csrf,
            self.issued,
            if self.cart_made { "c" } else { "-" },
            self.paid_cart_id.as_deref().unwrap_or("-"),
        )
    }

    /// The session a signed value holds. A value without an issue time or a cart id (a cookie
    /// from before sessions expired) holds none; one without a paid cart (from before carts
    /// were paid for by events) holds a session that has paid for none.
    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let (customer, cart, csrf, issued, made) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let paid_cart_id = match parts.next() {
            None | Some("-") => None,
            Some(paid) if id::is_valid(paid) => Some(paid.to_owned()),
            Some(_) => return None,
        };
        if parts.next().is_some()
            || !id::is_valid(customer)
            || !id::is_valid(cart)
            || !id::is_valid(csrf)
        {
            return None;
        }
        let issued = issued
            .parse::<i64>()
            .ok()
            .filter(|at| *at >= 0 && issued.bytes().all(|b| b.is_ascii_digit()))?;
        let cart_made = match made {
            "c" => true,
            "-" => false,
            _ => return None,
        };
        Some(Self {
            customer_id: customer.to_owned(),
            cart_id: cart.to_owned(),
            csrf: csrf.to_owned(),
            issued,
            cart_made,
            paid_cart_id,
        })
    }

    fn age(&self, now: OffsetDateTime) -> time::Duration {
        time::Duration::seconds(now.unix_timestamp().saturating_sub(self.issued))
    }
}

/// The key that signs session cookies, and how long a session lasts from its last use.
#[derive(Clone)]
pub struct SessionKey {
    key: Key,
    lifetime: time::Duration,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("key", &"…")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl SessionKey {
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<Self> {
        if secret.len() < MIN_KEY_BYTES {
            anyhow::bail!(
                "the session key must have at least {MIN_KEY_BYTES} bytes (it has {})",
                secret.len()
            );
        }
        Ok(Self {
            key: Key::derive_from(secret),
            lifetime: DEFAULT_LIFETIME,
        })
    }

    /// A random key, for a single process whose sessions may end when it stops.
    pub fn generate() -> Self {
        Self {
            key: Key::generate(),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// Sessions last `lifetime` from their last use.
    pub fn with_lifetime(self, lifetime: std::time::Duration) -> Self {
        let lifetime = time::Duration::try_from(lifetime).unwrap_or(DEFAULT_LIFETIME);
        Self { lifetime, ..self }
    }

    /// The session the request's cookie carries, if its signature verifies and it was issued
    /// within the lifetime.
    pub fn read(&self, request: &HttpRequest, now: OffsetDateTime) -> Option<Session> {
        let cookie = request.cookie(COOKIE)?;
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        let verified = jar.signed(&self.key).get(COOKIE)?;
        let session = Session::decode(verified.value())?;
        let age = session.age(now);
        (age <= self.lifetime && age >= -CLOCK_SKEW).then_some(session)
    }

    /// The signed cookie for `session`; `secure` when the visitor came over HTTPS.
    pub fn cookie(&self, session: &Session, secure: bool) -> Option<Cookie<'static>> {
        let mut jar = CookieJar::new();
        let cookie = Cookie::build(COOKIE, session.encode())
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure)
            .max_age(self.lifetime)
            .finish();
        jar.signed_mut(&self.key).add(cookie);
        jar.get(COOKIE).cloned()
    }

    /// Whether a session issued this long ago is issued again with this answer.
    fn rolls(&self, age: time::Duration) -> bool {
        age >= ROLL_AFTER.min(self.lifetime / 2)
    }
}

struct State {
    session: Session,
    /// No valid cookie came with the request.
    fresh: bool,
    /// The cookie must be (re)sent with the response.
    changed: bool,
}

/// The visitor's session, as handlers see it.
#[derive(Clone)]
pub struct Visitor(Rc<RefCell<State>>);

impl Visitor {
    pub fn customer_id(&self) -> String {
        self.0.borrow().session.customer_id.clone()
    }

    pub fn cart_id(&self) -> String {
        self.0.borrow().session.cart_id.clone()
    }

    /// Whether the session's cart has been made (by its first add).
    pub fn cart_made(&self) -> bool {
        self.0.borrow().session.cart_made
    }

    /// Notes that the session's cart exists now; the cookie says so from this answer on.
    pub fn set_cart_made(&self) {
        let mut state = self.0.borrow_mut();
        if !state.session.cart_made {
            state.session.cart_made = true;
            state.changed = true;
        }
    }

    /// The cart the session's last confirmed checkout paid for, if any.
    pub fn paid_cart_id(&self) -> Option<String> {
        self.0.borrow().session.paid_cart_id.clone()
    }

    /// Notes that a confirmed order paid for cart `cart_id`: if it is the session's cart, the
    /// session gets a new, empty one from this answer on and remembers the paid one.
    pub fn cart_paid(&self, cart_id: &str) {
        let mut state = self.0.borrow_mut();
        if state.session.cart_id == cart_id {
            state.session.paid_cart_id =
                Some(std::mem::replace(&mut state.session.cart_id, id::new_id()));
            state.session.cart_made = false;
            state.changed = true;
        }
    }

    pub fn csrf(&self) -> String {
        self.0.borrow().session.csrf.clone()
    }

    /// Whether the visitor arrived without a valid session cookie.
    pub fn is_fresh(&self) -> bool {
        self.0.borrow().fresh
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        let state = self.0.borrow();
        !state.fresh && bool::from(state.session.csrf.as_bytes().ct_eq(token.as_bytes()))
    }
}

impl FromRequest for Visitor {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            request
                .extensions()
                .get::<Visitor>()
                .cloned()
                .ok_or_else(|| {
                    actix_web::error::ErrorInternalServerError("session middleware missing")
                }),
        )
    }
}

/// Reads the session before the handler runs and sends the cookie back when it is new or
/// changed. Pages are personal (they hold the CSRF token), so they are never stored by shared
/// caches.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, Error> {
    let key = request
        .app_data::<web::Data<SessionKey>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("no session key"))?;
    let now = OffsetDateTime::now_utc();
    let (mut session, fresh) = match key.read(request.request(), now) {
        Some(session) => (session, false),
        None => (Session::fresh(now), true),
    };
    // A session in use lasts another lifetime from now.
    let rolled = !fresh && key.rolls(session.age(now));
    if rolled {
        session.issued = now.unix_timestamp();
    }
    let state = Rc::new(RefCell::new(State {
        session,
        fresh,
        changed: fresh || rolled,
    }));
    request.extensions_mut().insert(Visitor(state.clone()));
    let secure = request.connection_info().scheme() == "https";
    let mut response = next.call(request).await?;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
    }
    let state = state.borrow();
    if state.changed
        && let Some(cookie) = key.cookie(&state.session, secure)
    {
        response.response_mut().add_cookie(&cookie)?;
    }
    Ok(response)
}

/// Whether the browser says the request comes from this site. Browsers send `Sec-Fetch-Site`
/// and `Origin` on form posts; a request that names another site is refused even with a token.
pub fn same_origin(request: &HttpRequest) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site.eq_ignore_ascii_case("cross-site")
    {
        return false;
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            host.is_some_and(|host| host.eq_ignore_ascii_case(request.connection_info().host()))
        }
        Some(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn key() -> SessionKey {
        SessionKey::from_secret(b"0123456789abcdef0123456789abcdef").expect("key")
    }

    fn request_with(cookie: &Cookie<'_>) -> HttpRequest {
        TestRequest::default()
            .cookie(Cookie::new(COOKIE, cookie.value().to_owned()))
            .to_http_request()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn a_signed_session_reads_back() {
        let session = Session::fresh(now());
        let cookie = key().cookie(&session, false).expect("cookie");
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.max_age(), Some(DEFAULT_LIFETIME));
        assert_eq!(key().read(&request_with(&cookie), now()), Some(session));
    }

    #[test]
    fn a_session_older_than_its_lifetime_or_without_an_issue_time_is_refused() {
        let key = key().with_lifetime(std::time::Duration::from_secs(3600));
        let issued = now() - time::Duration::seconds(3000);
        let session = Session {
            issued: issued.unix_timestamp(),
            ..Session::fresh(issued)
        };
        let cookie = key.cookie(&session, false).expect("cookie");
        assert_eq!(
            key.read(&request_with(&cookie), now()),
            Some(session.clone())
        );
        let later = now() + time::Duration::seconds(601);
        assert_eq!(key.read(&request_with(&cookie), later), None, "expired");
        assert_eq!(
            key.read(&request_with(&cookie), issued - time::Duration::minutes(10)),
            None,
            "issued in the future"
        );
        // The form before sessions expired: signed, but no issue time (and no cart yet).
        let old = format!("{}.-.{}", session.customer_id, session.csrf);
        let mut jar = CookieJar::new();
        jar.signed_mut(&key.key).add(Cookie::new(COOKIE, old));
        let signed = jar.get(COOKIE).cloned().expect("cookie");
        assert_eq!(key.read(&request_with(&signed), now()), None);
        for bad in ["+5", "-1", "x", ""] {
            let value = format!(
                "{}.{}.{}.{bad}.-",
                session.customer_id, session.cart_id, session.csrf
            );
            assert_eq!(Session::decode(&value), None, "{bad}");
        }
        let no_cart = format!(
            "{}.-.{}.{}.-",
            session.customer_id, session.csrf, session.issued
        );
        assert_eq!(Session::decode(&no_cart), None);
        let no_state = format!(
            "{}.{}.{}.{}",
            session.customer_id, session.cart_id, session.csrf, session.issued
        );
        assert_eq!(Session::decode(&no_state), None);
        let made = Session {
            cart_made: true,
            ..session.clone()
        };
        assert_eq!(Session::decode(&made.encode()), Some(made));
        let paid = Session {
            paid_cart_id: Some(id::new_id()),
            ..session.clone()
        };
        assert_eq!(Session::decode(&paid.encode()), Some(paid));
        // A cookie from before carts were paid for by events: no paid cart.
        let before_paid = format!(
            "{}.{}.{}.{}.c",
            session.customer_id, session.cart_id, session.csrf, session.issued
        );
        assert_eq!(
            Session::decode(&before_paid),
            Some(Session {
                cart_made: true,
                ..session.clone()
            })
        );
        let five = format!(
            "{}.{}.{}.{}.-",
            session.customer_id, session.cart_id, session.csrf, session.issued
        );
        for bad in ["x", "", "-.-", "lower-case"] {
            assert_eq!(Session::decode(&format!("{five}.{bad}")), None, "{bad}");
        }
    }

    #[test]
    fn a_session_in_use_rolls_at_most_once_a_minute() {
        let key = key();
        assert!(!key.rolls(time::Duration::seconds(59)));
        assert!(key.rolls(time::Duration::seconds(60)));
        let short = key.with_lifetime(std::time::Duration::from_secs(10));
        assert!(short.rolls(time::Duration::seconds(5)));
        assert!(!short.rolls(time::Duration::seconds(4)));
    }

    #[test]
    fn a_tampered_or_foreign_cookie_is_ignored() {
        let session = Session::fresh(now());
        let cookie = key().cookie(&session, true).expect("cookie");
        assert_eq!(cookie.secure(), Some(true));
        let value = cookie.value();
        // Change one character of the signed value (the customer id).
        let mut tampered = value.to_owned();
        let at = tampered.len() - 30;
        let replacement = if &tampered[at..=at] == "a" { "b" } else { "a" };
        tampered.replace_range(at..=at, replacement);
        let forged = Cookie::new(COOKIE, tampered);
        assert_eq!(key().read(&request_with(&forged), now()), None);
        let other = SessionKey::from_secret(&[7u8; 40]).expect("key");
        assert_eq!(other.read(&request_with(&cookie), now()), None);
        let unsigned = Cookie::new(COOKIE, session.encode());
        assert_eq!(key().read(&request_with(&unsigned), now()), None);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(SessionKey::from_secret(b"too short").is_err());
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let same = TestRequest::default()
            .insert_header(("host", "shop.example"))
            .insert_header(("origin", "https://shop.example"))
            .to_http_request();
        assert!(same_origin(&same));
        let cross = TestRequest::default()
            .insert_header(("host", "shop.example"))
            .insert_header(("origin", "https://evil.example"))
            .to_http_request();
        assert!(!same_origin(&cross));
        let fetch = TestRequest::default()
            .insert_header(("sec-fetch-site", "cross-site"))
            .to_http_request();
        assert!(!same_origin(&fetch));
        let null = TestRequest::default()
            .insert_header(("origin", "null"))
            .to_http_request();
        assert!(!same_origin(&null));
    }
}
