//! Admin credentials: a bearer key compared in constant time.
//!
//! Both the configured key and the presented one are hashed first, so the comparison takes the
//! same time whatever the length or content of the guess.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::Problem;

/// The configured admin key; register it with `app_data(web::Data::new(AdminKey::new(..)))`.
#[derive(Clone)]
pub struct AdminKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

impl AdminKey {
    pub fn new(key: &str) -> Self {
        Self {
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the key (compared in constant time).
    pub fn verify(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

/// Configuration gives the key as text; only its digest is kept.
impl From<&str> for AdminKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

/// The header the services send each other their gateway key in.
pub const GATEWAY_HEADER: &str = "x-emporium-gateway";

/// The gateway key a service expects from its callers (register it with `app_data`); without
/// one, every caller is taken at its word.
#[derive(Clone, Debug)]
pub struct GatewayKey(AdminKey);

impl GatewayKey {
    pub fn new(key: &str) -> Self {
        Self(AdminKey::new(key))
    }
}

/// Whether `req` comes from one of the shop's services: it carries the gateway key, compared in
/// constant time, or the service has none to check.
pub fn from_gateway(req: &HttpRequest) -> bool {
    let Some(key) = req.app_data::<web::Data<GatewayKey>>() else {
        return true;
    };
    req.headers()
        .get(GATEWAY_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|presented| key.0.verify(presented))
}

/// Extractor that admits only callers from the shop's services (see [`from_gateway`]); others
/// get 401 `gateway_required`. For routes that act on something named by an id alone, where
/// the id is no secret from the services' neighbours (a reservation is named by its order's id).
#[derive(Debug, Clone, Copy)]
pub struct Gateway;

impl FromRequest for Gateway {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(if from_gateway(req) {
            Ok(Gateway)
        } else {
            Err(Problem::gateway_required())
        })
    }
}

/// A random gateway key, for one process that runs several services with none configured.
pub fn generate_gateway_key() -> String {
    format!("gw_{}", crate::id::new_id())
}

/// A random admin key for when none is configured.
pub fn generate_admin_key() -> String {
    format!("adm_{}", crate::id::new_id())
}

/// Extractor that admits only requests carrying `Authorization: Bearer <admin key>`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequest for Admin {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(check(req))
    }
}

fn check(req: &HttpRequest) -> Result<Admin, Problem> {
    let Some(key) = req.app_data::<web::Data<AdminKey>>() else {
        tracing::error!("admin route registered without an AdminKey");
        return Err(Problem::internal());
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        None => Err(Problem::unauthorized(
            "send the admin key as `Authorization: Bearer <key>`",
        )),
        Some(token) if key.verify(token) => Ok(Admin),
        Some(_) => Err(Problem::unauthorized("the admin key is not valid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_verifies() {
        let key = AdminKey::new("s3cret-key");
        assert!(key.verify("s3cret-key"));
        assert!(!key.verify("s3cret-kez"));
        assert!(!key.verify("s3cret-key "));
        assert!(!key.verify(""));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate_admin_key(), generate_admin_key());
    }
}
