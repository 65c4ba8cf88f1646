//! Password hashing with argon2id (OWASP parameters: m = 19 MiB, t = 2, p = 1), stored as PHC
//! strings so parameters can be raised later: [`verify`] says when a stored hash is weaker than
//! today's and should be replaced at the next successful login.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::Error;

mod policy;
pub use policy::{check_new, is_common};

/// Memory cost in KiB (19 MiB).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Iterations.
pub const T_COST: u32 = 2;
/// Parallelism.
pub const P_COST: u32 = 1;

/// The shortest password accepted, in characters.
pub const MIN_CHARS: usize = 12;
/// The longest password accepted, in bytes (argon2 would hash more, but nobody needs it).
pub const MAX_BYTES: usize = 1024;

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password (or an unusable hash).
    Mismatch,
    /// Right password; `rehash` when the stored hash uses weaker parameters than today's.
    Match {
        /// Replace the stored hash with [`hash`] of the same password.
        rehash: bool,
    },
}

/// Checks length rules: at least [`MIN_CHARS`] characters, at most [`MAX_BYTES`] bytes.
pub fn check_strength(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_CHARS {
        return Err(Error::WeakPassword(format!(
            "at least {MIN_CHARS} characters"
        )));
    }
    if password.len() > MAX_BYTES {
        return Err(Error::WeakPassword(format!("at most {MAX_BYTES} bytes")));
    }
    Ok(())
}

/// Hashes `password` with today's parameters and a fresh salt; returns the PHC string.
pub fn hash(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Checks `password` against a stored PHC string.
pub fn verify(phc: &str, password: &str) -> Verdict {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return Verdict::Mismatch;
    };
    // Verify with the parameters stored in the hash, whatever they are.
    if Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_err()
    {
        return Verdict::Mismatch;
    }
    let current = Params::try_from(&parsed).ok();
    let rehash = parsed.algorithm.as_str() != "argon2id"
        || current
            .is_none_or(|p| p.m_cost() < M_COST_KIB || p.t_cost() < T_COST || p.p_cost() < P_COST);
    Verdict::Match { rehash }
}

/// Spends the time of a real verification against a fixed hash, so that an unknown email
/// answers as slowly as a wrong password.
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("dummy password for timing").unwrap_or_default());
    let _ = verify(phc, password);
}

fn hasher() -> Argon2<'static> {
    // The parameters are constants inside argon2's accepted ranges.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let phc = hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            verify(&phc, "correct horse battery staple"),
            Verdict::Match { rehash: false }
        );
        assert_eq!(
            verify(&phc, "wrong horse battery staple"),
            Verdict::Mismatch
        );
        assert_eq!(verify("not a hash", "x"), Verdict::Mismatch);
        assert_ne!(
            hash("same password!").unwrap(),
            hash("same password!").unwrap(),
            "salted"
        );
    }

    #[test]
    fn weaker_hashes_ask_for_a_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let phc = weak
            .hash_password(b"an old password", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            verify(&phc, "an old password"),
            Verdict::Match { rehash: true }
        );
    }

    #[test]
    fn strength_rules() {
        assert!(check_strength("short").is_err());
        assert!(check_strength("twelve chars").is_ok());
        assert!(check_strength(&"x".repeat(1025)).is_err());
        assert!(
            check_strength("ééééééééééé").is_err(),
            "11 characters, 22 bytes"
        );
    }
}
