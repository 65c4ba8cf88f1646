use chrono::{DateTime, TimeZone, Utc};

use super::*;

/// The SHA-1 secret of RFC 6238 appendix B.
const RFC_SECRET: &[u8] = b"12345678901234567890";

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().unwrap()
}

/// RFC 6238 appendix B, SHA-1: (time, 8-digit TOTP). A 6-digit code is the same value modulo
/// 10^6, its last six digits.
const VECTORS: [(i64, &str); 6] = [
    (59, "94287082"),
    (1_111_111_109, "07081804"),
    (1_111_111_111, "14050471"),
    (1_234_567_890, "89005924"),
    (2_000_000_000, "69279037"),
    (20_000_000_000, "65353130"),
];

#[test]
fn codes_are_those_of_rfc_6238_appendix_b() {
    for (time, eight) in VECTORS {
        let code = &eight[2..];
        assert_eq!(
            step_of(RFC_SECRET, code, at(time)).unwrap(),
            Some(time / 30),
            "{time}"
        );
        // Apps show codes in two groups.
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(
            step_of(RFC_SECRET, &spaced, at(time)).unwrap(),
            Some(time / 30)
        );
    }
}

#[test]
fn one_step_either_side_is_accepted_and_no_more() {
    let (time, eight) = VECTORS[3];
    let code = &eight[2..];
    let step = time / 30;
    for (shift, expected) in [
        (-60, None),
        (-30, Some(step)),
        (0, Some(step)),
        (30, Some(step)),
        (60, None),
    ] {
        assert_eq!(
            step_of(RFC_SECRET, code, at(time + shift)).unwrap(),
            expected,
            "{shift:+} s"
        );
    }
}

#[test]
fn anything_but_six_digits_is_wrong() {
    let (time, eight) = VECTORS[2];
    for code in [
        "",
        &eight[3..],
        eight,
        "abcdef",
        "05047١",
        "+50471",
        &"0".repeat(100_000),
    ] {
        assert_eq!(
            step_of(RFC_SECRET, code, at(time)).unwrap(),
            None,
            "{code:.10}"
        );
    }
    assert_eq!(step_of(RFC_SECRET, &eight[2..], at(-1)).unwrap(), None);
}

#[test]
fn recovery_codes_are_random_and_normalised_alike() {
    let codes: std::collections::HashSet<String> = (0..50).map(|_| new_recovery_code()).collect();
    assert_eq!(codes.len(), 50);
    for code in &codes {
        assert_eq!(code.len(), 23, "{code}");
        assert_eq!(code.matches('-').count(), 3);
        let bare = normalise_recovery(code);
        assert_eq!(bare.len(), 2 * RECOVERY_BYTES);
        assert_eq!(normalise_recovery(&code.to_uppercase()), bare);
        assert_eq!(normalise_recovery(&format!(" {} ", bare)), bare);
    }
}

#[test]
fn the_uri_names_issuer_account_and_secret() {
    let totp = generator(RFC_SECRET, Some("ada:x@example.test")).unwrap();
    let uri = totp.to_url().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Mamba:ada_x%40example.test?"),
        "{uri}"
    );
    assert!(
        uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        "{uri}"
    );
    assert!(uri.contains("issuer=Mamba"), "{uri}");
}
