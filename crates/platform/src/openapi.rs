//! Pieces every service's OpenAPI document shares.

use actix_web::HttpResponse;
use actix_web::web::{self, Bytes};
use serde_json::{Value, json};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::problem::PROBLEM_JSON;

/// Declares the `admin_key` bearer scheme that admin routes name in their `security`.
#[derive(Debug, Clone, Copy)]
pub struct AdminKeySecurity;

impl Modify for AdminKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers the platform's own stack gives an operation, whatever its handler says: by what
/// the operation takes (any: headers too large, overloaded or made to fail by a fault switch;
/// parameters or a body: malformed; a body: too large, too slow, of another type; a path
/// parameter: nothing there).
fn platform_responses(operation: &Value) -> Vec<(&'static str, &'static str)> {
    let parameters = operation["parameters"].as_array();
    let takes = |place: &str| {
        parameters.is_some_and(|all| all.iter().any(|p| p["in"].as_str() == Some(place)))
    };
    let body = !operation["requestBody"].is_null();
    let mut responses = vec![
        ("431", "Request headers too large (`headers_too_large`)"),
        (
            "503",
            "The service is busy (`overloaded`, with `Retry-After`), a service it needs is not answering (`service_unavailable`), or a fault switch says so (`fault_injected`)",
        ),
    ];
    if body || takes("query") || takes("path") || takes("header") {
        responses.push((
            "400",
            "Malformed request: body (`invalid_json`, `invalid_body`), query (`invalid_query`, `invalid_cursor`) or path (`invalid_path`)",
        ));
    }
    if takes("path") {
        responses.push(("404", "No such resource"));
    }
    if body {
        responses.extend([
            ("408", "The body did not arrive in time (`body_timeout`)"),
            ("413", "Body too large (`payload_too_large`)"),
            (
                "415",
                "Body of a type the operation does not take (`unsupported_media_type`)",
            ),
            ("422", "Fields that are not valid (`validation_failed`)"),
        ]);
    }
    responses
}

/// `openapi` as a service serves it, serialised once: every operation also lists the answers
/// the platform gives it (see [`platform_responses`]) and those in `extra` (the edge's rate
/// limit, say), where its own description leaves them out. Handlers describe what they decide;
/// the platform answers for the rest, so a client (or a fuzzer checking answers against the
/// document) meets no status the document does not name.
pub fn document(
    openapi: &utoipa::openapi::OpenApi,
    extra: &[(&'static str, &'static str)],
) -> Bytes {
    let mut document = match serde_json::to_value(openapi) {
        Ok(document) => document,
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document does not serialise");
            return Bytes::from_static(b"{}");
        }
    };
    if let Some(paths) = document["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if !matches!(
                    method.as_str(),
                    "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
                ) {
                    continue;
                }
                let mut adds = platform_responses(operation);
                adds.extend_from_slice(extra);
                let responses = operation["responses"]
                    .as_object_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                let mut responses = responses;
                for (status, description) in adds {
                    responses.entry(status).or_insert_with(|| {
                        json!({
                            "description": description,
                            "content": {
                                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                            }
                        })
                    });
                }
                operation["responses"] = Value::Object(responses);
            }
        }
    }
    Bytes::from(serde_json::to_vec(&document).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Serves `document` (from [`document`]) at `path`.
pub fn configure(cfg: &mut web::ServiceConfig, path: &str, document: Bytes) {
    cfg.route(
        path,
        web::get().to(move || {
            let document = document.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(document)
            }
        }),
    );
}
