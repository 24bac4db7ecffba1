//! Parsing order requests into values the service can trust, and the totals rule.

use emporium_api::order::{Address, CustomerDetails, PaymentCard, PlaceOrder};
use emporium_platform::FieldError;
use emporium_platform::validation::{FieldErrors, optional_text, required_text};
use time::OffsetDateTime;

/// A customer id as the gateway sends it: an id this platform made.
pub fn is_customer_id(id: &str) -> bool {
    emporium_platform::id::is_valid(id)
}

pub use emporium_api::order::is_idempotency_key;

/// A card that passed the checks; its number lives only as long as the request.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidCard {
    pub number: String,
    pub brand: &'static str,
    pub last4: String,
}

impl std::fmt::Debug for ValidCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValidCard({} …{})", self.brand, self.last4)
    }
}

/// A checked order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub cart_id: String,
    pub customer: CustomerDetails,
    pub card: ValidCard,
}

impl ValidOrder {
    pub fn parse(input: &PlaceOrder, today: OffsetDateTime) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        if !emporium_platform::id::is_valid(&input.cart_id) {
            errors.add("cart_id", "is not a cart id");
        }
        let customer = parse_customer(&input.customer, &mut errors);
        let card = parse_card(&input.payment, today, &mut errors);
        errors.finish(Self {
            cart_id: input.cart_id.clone(),
            customer,
            card,
        })
    }
}

fn parse_customer(input: &CustomerDetails, errors: &mut FieldErrors) -> CustomerDetails {
    let name = required_text(errors, "customer.name", &input.name, 100);
    let email = parse_email(&input.email, errors);
    let address = &input.address;
    let line1 = required_text(errors, "customer.address.line1", &address.line1, 200);
    let line2 = optional_text(
        errors,
        "customer.address.line2",
        address.line2.as_deref(),
        200,
    );
    let city = required_text(errors, "customer.address.city", &address.city, 100);
    let region = optional_text(
        errors,
        "customer.address.region",
        address.region.as_deref(),
        100,
    );
    let postal_code = address.postal_code.trim().to_ascii_uppercase();
    if postal_code.is_empty()
        || postal_code.len() > 20
        || !postal_code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
    {
        errors.add(
            "customer.address.postal_code",
            "must be 1 to 20 letters, digits, spaces or dashes",
        );
    }
    let country = address.country.trim().to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.add(
            "customer.address.country",
            "must be a two-letter ISO 3166 country code",
        );
    }
    CustomerDetails {
        name,
        email,
        address: Address {
            line1,
            line2,
            city,
            region,
            postal_code,
            country,
        },
    }
}

fn parse_email(raw: &str, errors: &mut FieldErrors) -> String {
    let email = raw.trim();
    if !is_email(email) {
        errors.add("customer.email", "is not a valid email address");
    }
    match email.split_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => email.to_owned(),
    }
}

/// A practical email check: one `@`, a plain local part, and a domain of at least two labels
/// with an alphabetic top level. Deliverability is the mail system's business.
fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    email.len() <= 254 && local_ok && domain_ok
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (position, byte) in digits.bytes().rev().enumerate() {
        let mut digit = u32::from(byte - b'0');
        if position % 2 == 1 {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
    }
    sum % 10 == 0
}

fn brand(digits: &str) -> &'static str {
    let two: u32 = digits.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let four: u32 = digits.get(..4).and_then(|p| p.parse().ok()).unwrap_or(0);
    match () {
        _ if digits.starts_with('4') => "visa",
        _ if (51..=55).contains(&two) || (2221..=2720).contains(&four) => "mastercard",
        _ if two == 34 || two == 37 => "amex",
        _ if four == 6011 || two == 65 => "discover",
        _ => "card",
    }
}

fn parse_card(input: &PaymentCard, today: OffsetDateTime, errors: &mut FieldErrors) -> ValidCard {
    let digits: String = input
        .number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    let number_ok = (12..=19).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && luhn(&digits);
    if !number_ok {
        errors.add("payment.number", "is not a valid card number");
    }
    if !(1..=12).contains(&input.expiry_month) {
        errors.add("payment.expiry_month", "must be 1 to 12");
    } else if !(2000..=2100).contains(&input.expiry_year) {
        errors.add("payment.expiry_year", "must be a four-digit year");
    } else {
        let now = (today.year(), u32::from(u8::from(today.month())));
        let expiry = (
            i32::try_from(input.expiry_year).unwrap_or(0),
            input.expiry_month,
        );
        if expiry < now {
            errors.add("payment.expiry_year", "the card has expired");
        }
    }
    let cvc_ok =
        (3..=4).contains(&input.cvc.len()) && input.cvc.bytes().all(|b| b.is_ascii_digit());
    if !cvc_ok {
        errors.add("payment.cvc", "must be 3 or 4 digits");
    }
    let last4 = digits
        .get(digits.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_owned();
    ValidCard {
        brand: if number_ok { brand(&digits) } else { "card" },
        number: digits,
        last4,
    }
}

// The totals rule is part of the public API (the storefront shows it before checkout), so it
// lives with the wire types.
pub use emporium_api::order::{Pricing, totals};

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn order(number: &str) -> PlaceOrder {
        PlaceOrder {
            cart_id: emporium_platform::id::new_id(),
            customer: CustomerDetails {
                name: " Ada Lovelace ".into(),
                email: "ada@Example.ORG".into(),
                address: Address {
                    line1: "12 Analytical Row".into(),
                    line2: Some("  ".into()),
                    city: "London".into(),
                    region: None,
                    postal_code: "ec1a 1bb".into(),
                    country: "gb".into(),
                },
            },
            payment: PaymentCard {
                number: number.into(),
                expiry_month: 12,
                expiry_year: 2030,
                cvc: "123".into(),
            },
        }
    }

    const TODAY: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    #[test]
    fn a_valid_order_is_normalised() {
        let valid = ValidOrder::parse(&order("4242 4242 4242 4242"), TODAY).expect("valid");
        assert_eq!(valid.customer.name, "Ada Lovelace");
        assert_eq!(valid.customer.email, "ada@example.org");
        assert_eq!(valid.customer.address.line2, None);
        assert_eq!(valid.customer.address.postal_code, "EC1A 1BB");
        assert_eq!(valid.customer.address.country, "GB");
        assert_eq!(valid.card.brand, "visa");
        assert_eq!(valid.card.last4, "4242");
        assert_eq!(format!("{:?}", valid.card), "ValidCard(visa …4242)");
    }

    #[test]
    fn bad_cards_and_emails_are_refused() {
        for number in ["4242 4242 4242 4241", "1234", "4242-4242-4242-424x", ""] {
            assert!(
                ValidOrder::parse(&order(number), TODAY).is_err(),
                "{number}"
            );
        }
        let mut expired = order("4242424242424242");
        expired.payment.expiry_year = 2026;
        expired.payment.expiry_month = 10;
        assert!(ValidOrder::parse(&expired, TODAY).is_err());
        expired.payment.expiry_month = 11;
        assert!(
            ValidOrder::parse(&expired, TODAY).is_ok(),
            "valid through its month"
        );
        for email in [
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a..b@example.org",
            "ada@exa mple.org",
            "ada@example.c0m",
        ] {
            let mut bad = order("4242424242424242");
            bad.customer.email = email.into();
            let errors = ValidOrder::parse(&bad, TODAY).expect_err(email);
            assert_eq!(errors[0].field, "customer.email", "{email}");
        }
    }

    #[test]
    fn brands_follow_the_number() {
        assert_eq!(brand("5555555555554444"), "mastercard");
        assert_eq!(brand("378282246310005"), "amex");
        assert_eq!(brand("6011111111111117"), "discover");
    }

    #[test]
    fn totals_follow_the_documented_rule() {
        let pricing = Pricing {
            shipping_fee: 499,
            free_shipping_from: 5_000,
            tax_rate_bps: 825,
        };
        // 2 × 19.99 = 39.98; tax 8.25% = 3.29835 → 3.30 (half up); shipping 4.99.
        let small = totals(&[(1999, 2)], "USD", &pricing).expect("totals");
        assert_eq!(
            (
                small.subtotal.amount,
                small.shipping.amount,
                small.tax.amount,
                small.total.amount
            ),
            (3998, 499, 330, 4827)
        );
        // 50.00 reaches free shipping; tax 4.125 → 4.13 (half up, not banker's).
        let free = totals(&[(5000, 1)], "USD", &pricing).expect("totals");
        assert_eq!((free.shipping.amount, free.tax.amount), (0, 413));
        // Rounded once on the subtotal, not per line: 3 × 0.10 at 8.25% is 0.02475 → 0.02.
        let many = totals(&[(10, 1), (10, 1), (10, 1)], "USD", &pricing).expect("totals");
        assert_eq!(many.tax.amount, 2);
    }
}
