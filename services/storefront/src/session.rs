//! The visitor's session: a cookie signed with HMAC-SHA256 (the `cookie` crate's signed jar),
//! carrying the customer id, the cart id and the CSRF token. No session state lives on the
//! server, so any replica can serve any request. A cookie whose signature does not verify is
//! ignored and the visitor starts a fresh session.
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

/// Name of the session cookie.
pub const COOKIE: &str = "emporium_session";

/// How long a browser keeps the session: a month, renewed whenever the session changes.
const MAX_AGE: time::Duration = time::Duration::days(30);

/// Shortest accepted signing secret: HMAC-SHA256 wants at least 256 bits of key.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub customer_id: String,
    pub cart_id: Option<String>,
    pub csrf: String,
}

impl Session {
    fn fresh() -> Self {
        Self {
            customer_id: id::new_id(),
            cart_id: None,
            csrf: id::new_id(),
        }
    }

    /// `customer.cart.csrf`: ids are base32, so the value needs no quoting in a cookie.
    fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.customer_id,
            self.cart_id.as_deref().unwrap_or("-"),
            self.csrf
        )
    }

    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let (customer, cart, csrf) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !id::is_valid(customer) || !id::is_valid(csrf) {
            return None;
        }
        let cart_id = match cart {
            "-" => None,
            cart if id::is_valid(cart) => Some(cart.to_owned()),
            _ => return None,
        };
        Some(Self {
            customer_id: customer.to_owned(),
            cart_id,
            csrf: csrf.to_owned(),
        })
    }
}

/// The key that signs session cookies.
#[derive(Clone)]
pub struct SessionKey(Key);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(…)")
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
        Ok(Self(Key::derive_from(secret)))
    }

    /// A random key, for a single process whose sessions may end when it stops.
    pub fn generate() -> Self {
        Self(Key::generate())
    }

    /// The session the request's cookie carries, if its signature verifies.
    pub fn read(&self, request: &HttpRequest) -> Option<Session> {
        let cookie = request.cookie(COOKIE)?;
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        let verified = jar.signed(&self.0).get(COOKIE)?;
        Session::decode(verified.value())
    }

    /// The signed cookie for `session`; `secure` when the visitor came over HTTPS.
    pub fn cookie(&self, session: &Session, secure: bool) -> Option<Cookie<'static>> {
        let mut jar = CookieJar::new();
        let cookie = Cookie::build(COOKIE, session.encode())
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure)
            .max_age(MAX_AGE)
            .finish();
        jar.signed_mut(&self.0).add(cookie);
        jar.get(COOKIE).cloned()
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

    pub fn cart_id(&self) -> Option<String> {
        self.0.borrow().session.cart_id.clone()
    }

    pub fn csrf(&self) -> String {
        self.0.borrow().session.csrf.clone()
    }

    /// Whether the visitor arrived without a valid session cookie.
    pub fn is_fresh(&self) -> bool {
        self.0.borrow().fresh
    }

    pub fn set_cart(&self, cart_id: Option<String>) {
        let mut state = self.0.borrow_mut();
        if state.session.cart_id != cart_id {
            state.session.cart_id = cart_id;
            state.changed = true;
        }
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
    let (session, fresh) = match key.read(request.request()) {
        Some(session) => (session, false),
        None => (Session::fresh(), true),
    };
    let state = Rc::new(RefCell::new(State {
        session,
        fresh,
        changed: fresh,
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

    #[test]
    fn a_signed_session_reads_back() {
        let session = Session {
            cart_id: Some(id::new_id()),
            ..Session::fresh()
        };
        let cookie = key().cookie(&session, false).expect("cookie");
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(key().read(&request_with(&cookie)), Some(session));
    }

    #[test]
    fn a_tampered_or_foreign_cookie_is_ignored() {
        let session = Session::fresh();
        let cookie = key().cookie(&session, true).expect("cookie");
        assert_eq!(cookie.secure(), Some(true));
        let value = cookie.value();
        // Change one character of the signed value (the customer id).
        let mut tampered = value.to_owned();
        let at = tampered.len() - 30;
        let replacement = if &tampered[at..=at] == "a" { "b" } else { "a" };
        tampered.replace_range(at..=at, replacement);
        let forged = Cookie::new(COOKIE, tampered);
        assert_eq!(key().read(&request_with(&forged)), None);
        let other = SessionKey::from_secret(&[7u8; 40]).expect("key");
        assert_eq!(other.read(&request_with(&cookie)), None);
        let unsigned = Cookie::new(COOKIE, session.encode());
        assert_eq!(key().read(&request_with(&unsigned)), None);
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
