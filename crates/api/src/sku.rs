//! Stock keeping units: the key that joins a catalog product to its stock.

/// Longest SKU.
pub const MAX_SKU_CHARS: usize = 64;

/// A SKU as stored: trimmed and upper case, 1 to 64 of `A-Z 0-9 - _ .`.
pub fn parse(raw: &str) -> Result<String, String> {
    let sku = raw.trim().to_ascii_uppercase();
    if sku.is_empty() || sku.chars().count() > MAX_SKU_CHARS {
        return Err(format!("must have 1 to {MAX_SKU_CHARS} characters"));
    }
    if !sku
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may hold only letters, digits, '-', '_' and '.'".into());
    }
    Ok(sku)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_normalised_and_checked() {
        assert_eq!(parse(" kit-001 ").as_deref(), Ok("KIT-001"));
        assert!(parse("").is_err());
        assert!(parse("no spaces").is_err());
        assert!(parse(&"A".repeat(65)).is_err());
    }
}
