//! Money: integer minor units (cents for USD, yen for JPY) and an ISO 4217 currency code.
//! Never floating point, so sums and comparisons are exact.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Amount in the currency's minor unit (1999 is 19.99 USD).
    #[schema(example = 1999)]
    pub amount: i64,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }
}

/// Digits after the decimal point of a currency's minor unit, for the currencies Emporium knows.
pub fn minor_unit_digits(currency: &str) -> Option<u32> {
    match currency {
        "USD" | "EUR" | "GBP" | "CHF" | "CAD" | "AUD" | "NZD" | "SEK" | "NOK" | "DKK" | "PLN"
        | "CZK" | "SGD" | "HKD" | "MXN" | "BRL" | "ZAR" | "INR" | "CNY" => Some(2),
        "JPY" | "KRW" | "ISK" => Some(0),
        _ => None,
    }
}

impl std::fmt::Display for Money {
    /// `19.99 USD`: the amount with the currency's decimal places, then the code.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = minor_unit_digits(&self.currency).unwrap_or(2);
        if digits == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let scale = 10i64.pow(digits);
        let sign = if self.amount < 0 { "-" } else { "" };
        let magnitude = self.amount.unsigned_abs();
        let scale = scale.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            magnitude / scale,
            magnitude % scale,
            self.currency,
            width = digits as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_with_the_currency_digits() {
        assert_eq!(Money::new(1999, "USD").to_string(), "19.99 USD");
        assert_eq!(Money::new(5, "EUR").to_string(), "0.05 EUR");
        assert_eq!(Money::new(-150, "USD").to_string(), "-1.50 USD");
        assert_eq!(Money::new(1200, "JPY").to_string(), "1200 JPY");
    }
}
