//! `envelope-bench`: envelope encryption (a fresh data key per value, wrapped by the master
//! key; `security::envelope`) beside raw AES-256-GCM (one key, a fresh nonce per value) on the
//! same data, encrypt and decrypt, for 64 B and 1 MiB values, in one run. The ratio is the
//! figure: what the envelope costs per value.
//!
//! Run by hand: `cargo run --release -p tests --bin envelope-bench`.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use security::envelope::{KeyRing, LocalKek, aad};

/// Runs `f` repeatedly for about `budget`; returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_millis(1500);
    let (kek, _) = LocalKek::generate();
    let ring = KeyRing::new(Arc::new(kek), vec![]);
    let raw = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("32-byte key");
    let ad = aad(&["mamba secret v1", "tenant", "name"]);
    println!("{}", tests::bench::heading("Envelope vs raw AES-256-GCM"));
    println!(
        "| value | op | raw AES-256-GCM /s | envelope /s | envelope / raw | raw MiB/s | envelope MiB/s |\n|---:|---|---:|---:|---:|---:|---:|"
    );
    for size in [64usize, 1 << 20] {
        let value = vec![0x5au8; size];
        let nonce = [1u8; 12];
        let sealed_raw = raw
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &value,
                    aad: &ad,
                },
            )
            .expect("encrypt");
        let sealed = ring.seal(&value, &ad).expect("seal");
        let rows = [
            (
                "encrypt",
                rate(budget, || {
                    let mut n = [0u8; 12];
                    rand::fill(&mut n);
                    black_box(
                        raw.encrypt(
                            Nonce::from_slice(&n),
                            Payload {
                                msg: &value,
                                aad: &ad,
                            },
                        )
                        .expect("encrypt"),
                    );
                }),
                rate(budget, || {
                    black_box(ring.seal(&value, &ad).expect("seal"));
                }),
            ),
            (
                "decrypt",
                rate(budget, || {
                    black_box(
                        raw.decrypt(
                            Nonce::from_slice(&nonce),
                            Payload {
                                msg: &sealed_raw,
                                aad: &ad,
                            },
                        )
                        .expect("decrypt"),
                    );
                }),
                rate(budget, || {
                    black_box(ring.open(&sealed, &ad).expect("open"));
                }),
            ),
        ];
        let label = if size == 64 { "64 B" } else { "1 MiB" };
        for (op, raw_rate, env_rate) in rows {
            let mib = |r: f64| r * size as f64 / (1 << 20) as f64;
            println!(
                "| {label} | {op} | {raw_rate:.0} | {env_rate:.0} | {:.2} | {:.1} | {:.1} |",
                env_rate / raw_rate,
                mib(raw_rate),
                mib(env_rate)
            );
        }
    }
}
