//! The policy for a new password (NIST SP 800-63B, no composition rule): at least
//! [`MIN_CHARS`](super::MIN_CHARS) characters, at most [`MAX_BYTES`](super::MAX_BYTES) bytes,
//! not one of the most common passwords, and not containing the local part of the account's
//! email address.
//!
//! The list, `common-passwords.txt`, is the 20,000 most common passwords (Royce Williams's
//! 2017 list) as Django ships it in `django/contrib/auth/common-passwords.txt.gz` (Django
//! 5.2.19, BSD licence), one lower-case password a line, most common first. It is compiled in.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::Error;

/// The list, one password a line.
const COMMON: &str = include_str!("common-passwords.txt");

/// Email local parts shorter than this are not looked for inside a password: "al" or "bob"
/// would refuse innocent passwords without making any guess easier.
const MIN_LOCAL_PART_CHARS: usize = 4;

/// Checks a new password for the account `email`: length, the common list (case-insensitive),
/// and the email's local part (case-insensitive). The message says which rule failed.
pub fn check_new(password: &str, email: &str) -> Result<(), Error> {
    super::check_strength(password)?;
    let lowered = password.to_lowercase();
    if common().contains(lowered.trim()) {
        return Err(Error::WeakPassword(
            "this password is one of the most common ones".into(),
        ));
    }
    let local = email
        .rsplit_once('@')
        .map_or(email, |(local, _)| local)
        .trim()
        .to_lowercase();
    if local.chars().count() >= MIN_LOCAL_PART_CHARS && lowered.contains(&local) {
        return Err(Error::WeakPassword(
            "the password must not contain your email address".into(),
        ));
    }
    Ok(())
}

/// Whether `password` (lower-cased) is on the list.
pub fn is_common(password: &str) -> bool {
    common().contains(password.to_lowercase().trim())
}

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_shipped_and_read() {
        assert!(common().len() > 19_000, "{}", common().len());
        assert!(is_common("123456"));
        assert!(is_common("Password"));
        assert!(is_common("qwerty123456"));
        assert!(!is_common("correct horse battery"));
    }

    #[test]
    fn new_passwords() {
        let email = "alice.smith@example.test";
        assert!(check_new("correct horse battery", email).is_ok());
        assert!(
            check_new("Q1W2E3R4T5Y6", email).is_err(),
            "common, any case"
        );
        assert!(check_new("short", email).is_err());
        assert!(check_new(&"x".repeat(1025), email).is_err());
        assert!(check_new("my Alice.Smith password", email).is_err());
        assert!(
            check_new("al is a friend of mine", "al@example.test").is_ok(),
            "a short local part is not looked for"
        );
        assert!(
            check_new("only letters and spaces here", email).is_ok(),
            "no composition rule"
        );
    }
}
