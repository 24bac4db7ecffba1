//! Collecting field errors while parsing a request, so a client learns about every bad field in
//! one answer instead of one per round trip.

use crate::problem::FieldError;

/// Field errors found so far.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `value` if nothing was wrong, else every error found.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// Whether `text` holds control characters (newlines and tabs allowed when `multiline`).
pub fn has_control(text: &str, multiline: bool) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
}

/// Checks a required single-line text field: trimmed, 1 to `max` characters, no control
/// characters. Returns the trimmed text.
pub fn required_text(errors: &mut FieldErrors, field: &str, raw: &str, max: usize) -> String {
    let text = raw.trim().to_owned();
    let length = text.chars().count();
    if length == 0 || length > max {
        errors.add(field, format!("must have 1 to {max} characters"));
    } else if has_control(&text, false) {
        errors.add(field, "must not contain control characters");
    }
    text
}

/// Checks an optional single-line text field; empty counts as absent.
pub fn optional_text(
    errors: &mut FieldErrors,
    field: &str,
    raw: Option<&str>,
    max: usize,
) -> Option<String> {
    let text = raw.map(str::trim).filter(|t| !t.is_empty())?;
    if text.chars().count() > max {
        errors.add(field, format!("must have at most {max} characters"));
    } else if has_control(text, false) {
        errors.add(field, "must not contain control characters");
    }
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_error() {
        let mut errors = FieldErrors::new();
        let name = required_text(&mut errors, "name", "  Ada  ", 10);
        assert_eq!(name, "Ada");
        required_text(&mut errors, "city", "   ", 10);
        required_text(&mut errors, "line1", "a\u{7}b", 10);
        optional_text(&mut errors, "line2", Some(&"x".repeat(11)), 10);
        assert_eq!(optional_text(&mut errors, "region", Some("  "), 10), None);
        let fields: Vec<String> = errors
            .finish(())
            .expect_err("errors")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["city", "line1", "line2"]);
    }
}
