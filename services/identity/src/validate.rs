//! Input rules for e-mail addresses, display names and tokens.

use plt_contracts::{Error, Result};

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// The address as given (trimmed) and its normalised form (lower case), used for uniqueness
/// and look-ups.
pub fn email(field: &str, raw: &str) -> Result<(String, String)> {
    let email = raw.trim();
    if email.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_EMAIL_LEN} characters"),
        ));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(Error::invalid(
            field,
            "must be an e-mail address like name@example.com",
        ));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    if !local_ok {
        return Err(Error::invalid(field, "has an invalid part before the @"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !domain_ok {
        return Err(Error::invalid(
            field,
            "has an invalid domain (internationalised domains must be in punycode)",
        ));
    }
    Ok((email.to_owned(), email.to_ascii_lowercase()))
}

pub fn display_name(field: &str, raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// The default display name: the part of the address before the @.
pub fn default_display_name(email: &str) -> String {
    let local = email.split('@').next().unwrap_or(email);
    local.chars().take(MAX_DISPLAY_NAME_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            email("email", "  Alice.B+tag@Example.COM ").unwrap(),
            (
                "Alice.B+tag@Example.COM".to_owned(),
                "alice.b+tag@example.com".to_owned()
            )
        );
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            ".a@example.com",
            "a..b@example.com",
            "a@-x.com",
            "a@x..com",
            "a\n@example.com",
        ] {
            assert!(email("email", bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(email("email", &long).is_err());
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("n", "  Ada  ").unwrap(), "Ada");
        assert!(display_name("n", "   ").is_err());
        assert!(display_name("n", &"x".repeat(101)).is_err());
        assert!(display_name("n", "a\u{0}b").is_err());
        assert_eq!(default_display_name("bob@example.com"), "bob");
    }
}
