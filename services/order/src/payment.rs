//! A simulated payment provider, so checkout has a real decision to make without a real
//! processor. Its test cards:
//!
//! | card number          | outcome                                  |
//! |----------------------|------------------------------------------|
//! | 4242 4242 4242 4242  | approved (Visa)                          |
//! | 5555 5555 5555 4444  | approved (Mastercard)                    |
//! | 4000 0000 0000 0002  | declined: `card_declined`                |
//! | 4000 0000 0000 9995  | declined: `insufficient_funds`           |
//! | 4000 0000 0000 0119  | declined: `processing_error`             |
//!
//! Any other number that passes the checks (length, Luhn, expiry, CVC) is approved.
//! Authorisations are keyed by order id, so authorising an order twice gives one authorisation.

use emporium_api::order::DeclineCode;

use crate::domain::ValidCard;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved {
        authorization_id: String,
    },
    Declined {
        code: DeclineCode,
        message: &'static str,
    },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedProvider;

impl SimulatedProvider {
    pub fn authorize(&self, order_id: &str, card: &ValidCard) -> Decision {
        let decline = match card.number.as_str() {
            "4000000000000002" => Some((DeclineCode::CardDeclined, "the card was declined")),
            "4000000000009995" => Some((
                DeclineCode::InsufficientFunds,
                "the card has insufficient funds",
            )),
            "4000000000000119" => Some((
                DeclineCode::ProcessingError,
                "the card could not be processed; try again",
            )),
            _ => None,
        };
        match decline {
            Some((code, message)) => Decision::Declined { code, message },
            None => Decision::Approved {
                authorization_id: format!(
                    "auth_{}",
                    emporium_platform::id::derived_id(&format!("authorization:{order_id}"))
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> ValidCard {
        ValidCard {
            number: number.into(),
            brand: "visa",
            last4: number[number.len() - 4..].into(),
        }
    }

    #[test]
    fn test_cards_decide_and_authorisations_repeat() {
        let provider = SimulatedProvider;
        let first = provider.authorize("o1", &card("4242424242424242"));
        assert_eq!(first, provider.authorize("o1", &card("4242424242424242")));
        assert_ne!(first, provider.authorize("o2", &card("4242424242424242")));
        assert!(matches!(
            provider.authorize("o1", &card("4000000000009995")),
            Decision::Declined {
                code: DeclineCode::InsufficientFunds,
                ..
            }
        ));
        assert!(matches!(
            provider.authorize("o1", &card("4000000000000002")),
            Decision::Declined {
                code: DeclineCode::CardDeclined,
                ..
            }
        ));
    }
}
