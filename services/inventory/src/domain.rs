//! Parsing inventory requests into values the service can trust.

use std::collections::BTreeSet;

use emporium_api::inventory::{NewReservation, ReservationLine};
use emporium_platform::FieldError;
use emporium_platform::validation::FieldErrors;

pub const MAX_LINES: usize = 50;
pub const MAX_LINE_QUANTITY: i64 = 1_000;
pub const MAX_STOCK: i64 = 1_000_000_000;
pub const MAX_TTL_SECS: u64 = 86_400;
pub const MAX_RESERVATION_ID_CHARS: usize = 64;
pub const MAX_SKUS_PER_READ: usize = 100;

/// Whether `id` can name a reservation: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn is_reservation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RESERVATION_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A checked reservation request: lines sorted by SKU, each SKU once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRequest {
    pub id: String,
    pub lines: Vec<ReservationLine>,
    pub ttl_secs: u64,
}

impl ReservationRequest {
    pub fn parse(input: &NewReservation, default_ttl_secs: u64) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        if !is_reservation_id(&input.id) {
            errors.add(
                "id",
                format!("must be 1 to {MAX_RESERVATION_ID_CHARS} letters, digits, '-' or '_'"),
            );
        }
        if input.lines.is_empty() || input.lines.len() > MAX_LINES {
            errors.add("lines", format!("must hold 1 to {MAX_LINES} lines"));
        }
        let mut seen = BTreeSet::new();
        let mut lines = Vec::with_capacity(input.lines.len());
        for (position, line) in input.lines.iter().enumerate() {
            let sku = match emporium_api::sku::parse(&line.sku) {
                Ok(sku) => sku,
                Err(message) => {
                    errors.add(format!("lines[{position}].sku"), message);
                    continue;
                }
            };
            if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity) {
                errors.add(
                    format!("lines[{position}].quantity"),
                    format!("must be 1 to {MAX_LINE_QUANTITY}"),
                );
            }
            if !seen.insert(sku.clone()) {
                errors.add(format!("lines[{position}].sku"), "is listed twice");
            }
            lines.push(ReservationLine {
                sku,
                quantity: line.quantity,
            });
        }
        lines.sort();
        let ttl_secs = input.ttl_seconds.unwrap_or(default_ttl_secs);
        if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
            errors.add("ttl_seconds", format!("must be 1 to {MAX_TTL_SECS}"));
        }
        errors.finish(Self {
            id: input.id.clone(),
            lines,
            ttl_secs,
        })
    }

    /// The lines as one string, to tell a repeat of this request from a different one.
    pub fn lines_key(&self) -> String {
        lines_key(&self.lines)
    }
}

pub fn lines_key(lines: &[ReservationLine]) -> String {
    let mut sorted: Vec<&ReservationLine> = lines.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|line| format!("{}={}", line.sku, line.quantity))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks an absolute stock level.
pub fn check_available(available: i64) -> Result<(), Vec<FieldError>> {
    if (0..=MAX_STOCK).contains(&available) {
        Ok(())
    } else {
        Err(vec![FieldError::new(
            "available",
            format!("must be 0 to {MAX_STOCK}"),
        )])
    }
}

/// Checks a stock adjustment.
pub fn check_delta(delta: i64) -> Result<(), Vec<FieldError>> {
    // A range, not `abs()`: the absolute value of i64::MIN does not fit in an i64.
    if delta != 0 && (-MAX_STOCK..=MAX_STOCK).contains(&delta) {
        Ok(())
    } else {
        Err(vec![FieldError::new(
            "delta",
            format!("must be non-zero and at most {MAX_STOCK} either way"),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_beyond_the_stock_limit_are_refused_even_at_the_ends_of_i64() {
        assert!(check_delta(1).is_ok() && check_delta(-MAX_STOCK).is_ok());
        for wrong in [0, MAX_STOCK + 1, -MAX_STOCK - 1, i64::MAX, i64::MIN] {
            assert!(check_delta(wrong).is_err(), "{wrong}");
        }
    }

    fn line(sku: &str, quantity: i64) -> ReservationLine {
        ReservationLine {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn requests_are_normalised_and_keyed_by_their_lines() {
        let a = ReservationRequest::parse(
            &NewReservation {
                id: "order-1".into(),
                lines: vec![line("kit-2", 1), line("KIT-1", 3)],
                ttl_seconds: None,
            },
            900,
        )
        .expect("valid");
        assert_eq!(a.lines[0].sku, "KIT-1");
        assert_eq!(a.ttl_secs, 900);
        assert_eq!(a.lines_key(), "KIT-1=3,KIT-2=1");
    }

    #[test]
    fn every_bad_field_is_reported() {
        let errors = ReservationRequest::parse(
            &NewReservation {
                id: "../x".into(),
                lines: vec![
                    line("KIT-1", 0),
                    line("kit-1", -2),
                    line("bad sku", 1),
                    line("X", 5000),
                ],
                ttl_seconds: Some(0),
            },
            900,
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "id",
                "lines[0].quantity",
                "lines[1].quantity",
                "lines[1].sku",
                "lines[2].sku",
                "lines[3].quantity",
                "ttl_seconds"
            ]
        );
    }
}
