//! Text search over products: every word of the query must appear, case-insensitively, in the
//! product's name, SKU, description, category or attribute values.
//!
//! A scan with a filter, as DynamoDB's filter expressions do, not an inverted index: the catalog
//! of a shop this platform serves is read in pages of a listing index, and the scan is bounded
//! per request (see `SEARCH_SCAN_BUDGET`). A shop with millions of products would feed a search
//! engine from the catalog's writes instead.

use emporium_api::catalog::{MAX_QUERY_CHARS, MAX_QUERY_WORDS as MAX_TERMS, Product};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchTerms(Vec<String>);

impl SearchTerms {
    pub fn parse(query: &str) -> Result<Self, String> {
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(format!("q must have at most {MAX_QUERY_CHARS} characters"));
        }
        if query.chars().any(char::is_control) {
            return Err("q must not contain control characters".into());
        }
        let mut terms: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        terms.sort();
        terms.dedup();
        if terms.len() > MAX_TERMS {
            return Err(format!("q may have at most {MAX_TERMS} words"));
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The terms in a fixed order, so equal searches share cache entries and cursors.
    pub fn canonical(&self) -> String {
        self.0.join(" ")
    }

    pub fn matches(&self, product: &Product) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let mut haystack = String::with_capacity(256);
        for part in [
            &product.name,
            &product.sku,
            &product.description,
            &product.category,
        ] {
            haystack.push_str(&part.to_lowercase());
            haystack.push('\n');
        }
        for value in product.attributes.values() {
            haystack.push_str(&value.to_lowercase());
            haystack.push('\n');
        }
        self.0.iter().all(|term| haystack.contains(term.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_api::Money;
    use time::OffsetDateTime;

    fn product() -> Product {
        Product {
            id: "x".into(),
            sku: "KIT-7".into(),
            name: "Copper Kettle".into(),
            description: "Boils water fast".into(),
            category: "kitchen".into(),
            price: Money::new(100, "USD"),
            images: vec![],
            attributes: [("material".to_owned(), "Copper".to_owned())].into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            version: 1,
        }
    }

    #[test]
    fn every_word_must_match_somewhere() {
        let p = product();
        assert!(SearchTerms::parse("kettle").expect("parse").matches(&p));
        assert!(
            SearchTerms::parse("COPPER water")
                .expect("parse")
                .matches(&p)
        );
        assert!(SearchTerms::parse("kit-7").expect("parse").matches(&p));
        assert!(
            !SearchTerms::parse("kettle steel")
                .expect("parse")
                .matches(&p)
        );
    }

    #[test]
    fn equivalent_queries_are_canonical() {
        let a = SearchTerms::parse("  Kettle copper kettle").expect("parse");
        let b = SearchTerms::parse("copper KETTLE").expect("parse");
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn long_or_odd_queries_are_refused() {
        assert!(SearchTerms::parse(&"a".repeat(MAX_QUERY_CHARS + 1)).is_err());
        assert!(SearchTerms::parse("a b c d e f g h i").is_err());
        assert!(SearchTerms::parse("tab\u{7}bell").is_err());
    }
}
