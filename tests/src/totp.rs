//! An authenticator app written independently of the panel's: HOTP (RFC 4226) and TOTP
//! (RFC 6238, HMAC-SHA-1) from the `hmac` and `sha1` crates and an RFC 4648 base32 decoder, so
//! the tests check the panel's codes against another implementation than the one it uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};

/// Seconds per step, as RFC 6238 recommends.
pub const STEP: u64 = 30;

/// HOTP (RFC 4226 §5.3) of `key` at `counter`, `digits` long.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(digits),
        width = digits as usize
    )
}

/// TOTP (RFC 6238 §4) of `key` at Unix time `time`.
pub fn totp(key: &[u8], time: u64, digits: u32) -> String {
    hotp(key, time / STEP, digits)
}

/// RFC 4648 base32 without padding, upper case.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|&a| a == c).expect("base32") as u64;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}

/// The test's clock, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// An authenticator: the secret and the last step whose code was given out.
pub struct App {
    /// The secret's bytes.
    pub key: Vec<u8>,
    last: Option<u64>,
}

impl App {
    /// The app of a base32 secret.
    pub fn new(secret: &str) -> App {
        App {
            key: base32_decode(secret),
            last: None,
        }
    }

    /// The code of the earliest step after the last one given out that the panel takes for
    /// the next two seconds (one step either side of its clock); waits for the next step only
    /// when there is none.
    pub async fn next_code(&mut self) -> String {
        for _ in 0..3 {
            let now = unix_now();
            let low = (now + 2) / STEP - 1;
            let high = now / STEP + 1;
            let step = self.last.map_or(low, |last| low.max(last + 1));
            if step <= high {
                self.last = Some(step);
                return hotp(&self.key, step, 6);
            }
            let next = (now / STEP + 1) * STEP;
            tokio::time::sleep(Duration::from_secs(next - now)).await;
        }
        panic!("no usable step within three steps");
    }

    /// The code of the last step given out again: a replay.
    pub fn last_code(&self) -> String {
        hotp(&self.key, self.last.expect("a code was given out"), 6)
    }

    /// A code of no step near now.
    pub fn stale_code(&self) -> String {
        hotp(&self.key, unix_now() / STEP - 5, 6)
    }
}
