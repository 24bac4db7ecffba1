//! Every problem code an Emporium service answers with, as one enum.
//!
//! The enum lives here, beside [`crate::Problem`], and not in `emporium-api` where the wire
//! contract is published: the platform answers problems itself before any service code runs
//! (`invalid_json`, `body_timeout`, `overloaded`, `not_found`, `fault_injected`, ...), and
//! `emporium-api` depends on the platform, not the other way round. `emporium-api` re-exports it
//! as `emporium_api::ProblemCode`, the name clients use.
//!
//! On the wire a code is its snake_case text, exactly as before the enum existed, and a code
//! this build does not know (a newer service's) is kept as [`ProblemCode::Other`], so a client's
//! parse never fails on it.

/// Declares a wire vocabulary: an enum of known codes with their text, a variant keeping any
/// other text as sent, and serde as that text. Equality, hashing and ordering go by the text, so
/// `Other("out_of_stock")` made by hand is the same code as `OutOfStock`.
#[macro_export]
macro_rules! wire_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
            /// A code this build does not know (sent by a newer service), kept as it came.
            Other(Box<str>),
        }

        impl $name {
            /// Every code this build knows.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The code as it is written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(text) => text,
                }
            }

            /// The code a wire text names; text no known code has is kept as `Other`.
            pub fn from_wire(text: &str) -> Self {
                match text {
                    $( $text => Self::$variant, )+
                    other => Self::Other(other.into()),
                }
            }
        }

        impl ::std::cmp::PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl ::std::cmp::Eq for $name {}

        impl ::std::hash::Hash for $name {
            fn hash<H: ::std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok(Self::from_wire(&text))
            }
        }
    };
}

wire_codes! {
    /// A problem's stable, documented code (`docs/API.md` lists each): the last part of its
    /// `type`, and what clients match on.
    pub enum ProblemCode {
        // === Answered by the platform, for every service ===
        InvalidJson = "invalid_json",
        InvalidBody = "invalid_body",
        InvalidQuery = "invalid_query",
        InvalidPath = "invalid_path",
        InvalidCursor = "invalid_cursor",
        ValidationFailed = "validation_failed",
        PayloadTooLarge = "payload_too_large",
        UnsupportedMediaType = "unsupported_media_type",
        Unauthorized = "unauthorized",
        GatewayRequired = "gateway_required",
        NotFound = "not_found",
        MethodNotAllowed = "method_not_allowed",
        BodyTimeout = "body_timeout",
        HeadersTooLarge = "headers_too_large",
        /// A request line or head over the server's own limits (the framework's 414 and 431).
        RequestTooLarge = "request_too_large",
        /// A client error no more specific code describes.
        BadRequest = "bad_request",
        InternalError = "internal_error",
        ServiceUnavailable = "service_unavailable",
        Overloaded = "overloaded",
        FaultInjected = "fault_injected",
        // === Catalog ===
        ProductNotFound = "product_not_found",
        CategoryNotFound = "category_not_found",
        VersionConflict = "version_conflict",
        SkuTaken = "sku_taken",
        CategoryExists = "category_exists",
        CategoryNotEmpty = "category_not_empty",
        // === Inventory ===
        StockNotFound = "stock_not_found",
        ReservationNotFound = "reservation_not_found",
        OutOfStock = "out_of_stock",
        ReservationConflict = "reservation_conflict",
        ReservationExpired = "reservation_expired",
        ReservationReleased = "reservation_released",
        ReservationCommitted = "reservation_committed",
        ReservationNotCommitted = "reservation_not_committed",
        InsufficientStock = "insufficient_stock",
        // === Cart ===
        CartNotFound = "cart_not_found",
        LineNotFound = "line_not_found",
        UnknownProduct = "unknown_product",
        CartFull = "cart_full",
        CartInCheckout = "cart_in_checkout",
        CartChanged = "cart_changed",
        CartBusy = "cart_busy",
        // === Order (problems, and the failure codes stored on orders) ===
        CustomerRequired = "customer_required",
        IdempotencyKeyMissing = "idempotency_key_missing",
        InvalidIdempotencyKey = "invalid_idempotency_key",
        IdempotencyKeyReused = "idempotency_key_reused",
        CartEmpty = "cart_empty",
        CartUnavailable = "cart_unavailable",
        ProductUnavailable = "product_unavailable",
        PaymentDeclined = "payment_declined",
        InventoryUnavailable = "inventory_unavailable",
        CheckoutInterrupted = "checkout_interrupted",
        /// A failed checkout whose order records no reason (no stored order has none).
        CheckoutFailed = "checkout_failed",
        /// The order service's checkout fault switch failed the checkout on purpose.
        InjectedFault = "injected_fault",
        /// A confirmed order's stock hold was gone before it was sold; the order is cancelled.
        StockLost = "stock_lost",
        CancelledByCustomer = "cancelled_by_customer",
        OrderNotFound = "order_not_found",
        OrderNotCancellable = "order_not_cancellable",
        // === Storefront ===
        CrossSiteRequest = "cross_site_request",
        RateLimited = "rate_limited",
        AssetNotFound = "asset_not_found",
        // === The one-process mode's traces page ===
        TraceNotFound = "trace_not_found",
    }
}

impl ProblemCode {
    /// Whether the code says the service itself could not serve (it is full, or its fault
    /// switches failed it), whatever was asked: callers count it against the service.
    pub fn is_service_failure(&self) -> bool {
        matches!(self, Self::Overloaded | Self::FaultInjected)
    }
}

impl From<&str> for ProblemCode {
    fn from(text: &str) -> Self {
        Self::from_wire(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_text() {
        for code in ProblemCode::KNOWN {
            let text = code.as_str();
            assert_eq!(&ProblemCode::from_wire(text), code);
            assert!(
                !matches!(ProblemCode::from_wire(text), ProblemCode::Other(_)),
                "{text} parses as a known code"
            );
            let json = serde_json::to_value(code).expect("serialise");
            assert_eq!(json, serde_json::Value::from(text), "serde writes the text");
            let back: ProblemCode = serde_json::from_value(json).expect("deserialise");
            assert_eq!(&back, code);
        }
    }

    #[test]
    fn codes_are_distinct_snake_case_texts() {
        let mut seen = std::collections::HashSet::new();
        for code in ProblemCode::KNOWN {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is declared twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text} is snake_case"
            );
        }
    }

    #[test]
    fn an_unknown_code_is_kept_as_sent() {
        let code: ProblemCode = serde_json::from_str(r#""from_a_newer_service""#).expect("parse");
        assert_eq!(code, ProblemCode::Other("from_a_newer_service".into()));
        assert_eq!(
            serde_json::to_string(&code).expect("serialise"),
            r#""from_a_newer_service""#
        );
        assert_eq!(
            ProblemCode::Other("out_of_stock".into()),
            ProblemCode::OutOfStock
        );
    }

    /// `docs/API.md` is where clients learn the codes: each has a row in one of its tables.
    #[test]
    fn every_code_is_listed_in_the_api_document() {
        let document = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API.md"));
        let missing: Vec<&str> = ProblemCode::KNOWN
            .iter()
            .map(ProblemCode::as_str)
            .filter(|code| !document.contains(&format!("| `{code}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/API.md lists no row for {missing:?}"
        );
    }
}
