//! `identity-load`: identity and rate-limit speed, measured side by side in one run.
//!
//! - Limiter checks/s on Redis (the sliding-window script, 32 concurrent callers) beside
//!   `redis-benchmark` running EVALSHA of a trivial script on the same server (the ratio is the
//!   cost of the window logic and the client);
//! - in-memory limiter checks/s;
//! - JWT verifications/s (EdDSA and ES256);
//! - `/health` latency of the real `api serve` alone and during 50 concurrent logins (argon2id
//!   runs on a bounded blocking pool, so logins must not stall other requests);
//! - a correct login's latency while 300 failed logins are in flight from 300 addresses behind
//!   a trusted proxy (the hashing queue is bounded: the answer, a token or 503, must come
//!   within a second).
//!
//! It starts its own redis-server and panel on loopback and stops them. Run by hand:
//! `cargo run --release -p tests --bin identity-load`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use security::jwt::{Claims, KeyRing, SigningKey};
use security::limiter::{Limiter, MemoryLimiter, RedisLimiter, Rule};
use serde_json::{Value, json};

const CHECKS: usize = 20_000;
const CONCURRENCY: usize = 32;

fn main() -> anyhow::Result<()> {
    security::tls::install_default_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let redis = tests::RedisServer::start().await;
    measure(&redis.url(), redis.port, tmp.path()).await
}

async fn measure(redis_url: &str, redis_port: u16, dir: &std::path::Path) -> anyhow::Result<()> {
    // Limiter on Redis.
    let limiter = Arc::new(RedisLimiter::connect(redis_url, "bench:").await?);
    let rule = Rule {
        limit: 1_000_000,
        window: Duration::from_secs(60),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (limiter, next) = (limiter.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CHECKS {
                        break;
                    }
                    let now = chrono::Utc::now().timestamp_millis();
                    let _ = limiter.check(&format!("k{}", i % 1000), rule, now).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let redis_rate = CHECKS as f64 / start.elapsed().as_secs_f64();

    // redis-benchmark, EVALSHA of a trivial script, same server, same concurrency.
    let sha = String::from_utf8(
        std::process::Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "SCRIPT", "LOAD", "return 1"])
            .output()?
            .stdout,
    )?;
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &redis_port.to_string(),
            "-n",
            &CHECKS.to_string(),
            "-c",
            &CONCURRENCY.to_string(),
            "-q",
            "EVALSHA",
            sha.trim(),
            "0",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let baseline: f64 = text
        .rsplit("\r")
        .next()
        .unwrap_or(&text)
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok())
        .unwrap_or(0.0);

    // In-memory limiter.
    let memory = MemoryLimiter::new();
    let n_mem = 1_000_000;
    let start = Instant::now();
    for i in 0..n_mem {
        let _ = memory
            .check(&format!("k{}", i % 1000), rule, i as i64)
            .await;
    }
    let memory_rate = n_mem as f64 / start.elapsed().as_secs_f64();

    // JWT verifications.
    let mut jwt_rates = Vec::new();
    for pem in [SigningKey::generate_ed25519_pem()?, p256_pem()?] {
        let ring = KeyRing::new(SigningKey::from_pem(&pem)?, vec![]);
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "u".into(),
            sid: "s".into(),
            email: "e@example.com".into(),
            tenant_id: None,
            role: None,
            iss: "iss".into(),
            aud: "mamba-panel".into(),
            iat: now,
            exp: now + 900,
            jti: "j".into(),
        };
        let token = ring.sign(&claims)?;
        let auds = vec!["mamba-panel".to_owned()];
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            ring.verify(&token, now, "iss", &auds)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        jwt_rates.push((
            ring.active().alg().name(),
            n as f64 / start.elapsed().as_secs_f64(),
        ));
    }

    // /health alone and during 50 concurrent logins, against the real panel.
    let pki = tests::TestPki::new(dir);
    let db_url = format!("sqlite://{}?mode=rwc", dir.join("panel.db").display());
    let mut env = tests::panel_env(&pki, &db_url, "127.0.0.1:0");
    env.push((
        "RATE_LIMITS".into(),
        "login=1000000/1m,register=1000/1m,api=1000000/1m".into(),
    ));
    env.push(("TRUSTED_PROXIES".into(), "127.0.0.1".into()));
    env.push((
        "MAIL_OUTBOX_DIR".into(),
        dir.join("outbox").display().to_string(),
    ));
    let panel = tests::Proc::start("api", &["serve"], &env, dir);
    let line = panel
        .wait_for_line("panel listening", Duration::from_secs(30))
        .await;
    let http_addr = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http_addr="))
        .unwrap_or_default()
        .to_owned();
    let base = format!("http://{http_addr}");
    let http = reqwest::Client::new();
    let credentials = json!({"email": "load@example.com", "password": "correct horse battery"});
    http.post(format!("{base}/api/auth/register"))
        .json(&credentials)
        .send()
        .await?;

    let alone = health_latencies(&http, &base, Duration::from_secs(3)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> = (0..50)
        .map(|_| {
            let (http, base, stop, logins, credentials) = (
                http.clone(),
                base.clone(),
                stop.clone(),
                logins.clone(),
                credentials.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = http
                        .post(format!("{base}/api/auth/login"))
                        .json(&credentials)
                        .send()
                        .await
                        && r.status().is_success()
                    {
                        logins.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load_start = Instant::now();
    let logins_before = logins.load(Ordering::Relaxed);
    let during = health_latencies(&http, &base, Duration::from_secs(3)).await?;
    let login_rate = (logins.load(Ordering::Relaxed) - logins_before) as f64
        / load_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    let flood = login_flood(&http, &base, &credentials).await?;
    drop(panel);

    println!();
    println!("{}", tests::bench::heading("identity and limits"));
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| limiter checks/s, Redis sliding window ({CHECKS} × {CONCURRENCY} callers) | {redis_rate:.0} |"
    );
    println!("| redis-benchmark EVALSHA `return 1`, same server, same -n/-c | {baseline:.0} |");
    println!(
        "| ratio limiter / EVALSHA baseline | {:.2} |",
        redis_rate / baseline.max(f64::MIN_POSITIVE)
    );
    println!("| limiter checks/s, in memory (one thread) | {memory_rate:.0} |");
    for (alg, rate) in &jwt_rates {
        println!("| JWT verifications/s, {alg} (one thread) | {rate:.0} |");
    }
    println!(
        "| /health p50 / p99 alone, 3 s (ms) | {:.2} / {:.2} |",
        tests::bench::percentile(&alone, 50.0),
        tests::bench::percentile(&alone, 99.0)
    );
    println!(
        "| /health p50 / p99 during 50 concurrent logins, 3 s (ms) | {:.2} / {:.2} |",
        tests::bench::percentile(&during, 50.0),
        tests::bench::percentile(&during, 99.0)
    );
    println!("| logins/s meanwhile (argon2id m=19 MiB t=2 p=1) | {login_rate:.1} |");
    for (place, sample) in [
        ("a new address", &flood.fresh),
        ("the account's usual network", &flood.familiar),
    ] {
        println!(
            "| correct login from {place} during {FLOOD} failed logins in flight from {FLOOD} addresses, p50 / max ({} samples, ms) | {:.1} / {:.1} |",
            sample.latencies.len(),
            tests::bench::percentile(&sample.latencies, 50.0),
            sample.latencies.last().copied().unwrap_or(0.0)
        );
        println!(
            "| those answered with a token / 503 | {} / {} |",
            sample.tokens, sample.shed
        );
    }
    println!(
        "| flood logins meanwhile: 401 / 503 shed | {} / {} |",
        flood.refused, flood.shed
    );
    Ok(())
}

/// Failed logins kept in flight by the flood.
const FLOOD: usize = 300;
/// Correct logins timed during it, one after another.
const FLOOD_SAMPLES: usize = 30;

/// The address the correct user logs in from before the flood (familiar to the account).
const HOME: &str = "192.0.2.1";

/// Correct logins from one kind of place.
#[derive(Default)]
struct Sample {
    /// Latencies (ms), sorted.
    latencies: Vec<f64>,
    /// Answered with a token.
    tokens: usize,
    /// Answered 503 (the hashing queue was full).
    shed: usize,
}

/// What correct logins met during a flood of failed ones.
struct Flood {
    /// From addresses new to the account.
    fresh: Sample,
    /// From [`HOME`].
    familiar: Sample,
    /// Flood logins answered 401.
    refused: usize,
    /// Flood logins answered 503.
    shed: usize,
}

/// Keeps [`FLOOD`] failed logins in flight, each from a new address (through the trusted
/// proxy) for a new unknown email, while [`FLOOD_SAMPLES`] correct logins are timed.
async fn login_flood(
    http: &reqwest::Client,
    base: &str,
    credentials: &Value,
) -> anyhow::Result<Flood> {
    let home = http
        .post(format!("{base}/api/auth/login"))
        .header("x-forwarded-for", HOME)
        .json(credentials)
        .send()
        .await?;
    anyhow::ensure!(
        home.status().is_success(),
        "login from {HOME}: {}",
        home.status()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let (refused, shed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..FLOOD)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/api/auth/login"));
            let (stop, next) = (stop.clone(), next.clone());
            let (refused, shed) = (refused.clone(), shed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                    let body = json!({"email": format!("flood{n}@example.com"), "password": "wrong password!"});
                    let sent = http
                        .post(&url)
                        .header("x-forwarded-for", ip)
                        .json(&body)
                        .send()
                        .await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(401) => refused.fetch_add(1, Ordering::Relaxed),
                        Ok(503) => shed.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fresh = Sample::default();
    let mut familiar = Sample::default();
    for i in 0..FLOOD_SAMPLES {
        // Alternately from a new address and from the one that logged in before the flood.
        let (ip, sample) = if i % 2 == 0 {
            (format!("192.0.2.{}", i + 2), &mut fresh)
        } else {
            (HOME.to_owned(), &mut familiar)
        };
        let start = Instant::now();
        let status = http
            .post(format!("{base}/api/auth/login"))
            .header("x-forwarded-for", ip)
            .json(credentials)
            .send()
            .await?
            .status()
            .as_u16();
        sample
            .latencies
            .push(start.elapsed().as_secs_f64() * 1000.0);
        match status {
            200 => sample.tokens += 1,
            503 => sample.shed += 1,
            other => anyhow::bail!("a correct login answered {other} during the flood"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    for sample in [&mut fresh, &mut familiar] {
        sample.latencies.sort_by(f64::total_cmp);
    }
    Ok(Flood {
        fresh,
        familiar,
        refused: refused.load(Ordering::Relaxed),
        shed: shed.load(Ordering::Relaxed),
    })
}

/// Sequential `/health` requests for `window`; their latencies in ms, sorted.
async fn health_latencies(
    http: &reqwest::Client,
    base: &str,
    window: Duration,
) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::new();
    let until = Instant::now() + window;
    while Instant::now() < until {
        let start = Instant::now();
        let body: Value = http
            .get(format!("{base}/health"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(body["status"] == "ok", "health: {body}");
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn p256_pem() -> anyhow::Result<String> {
    Ok(
        security::pki::CertificateAuthority::generate("bench", time::OffsetDateTime::now_utc(), 1)?
            .key_pem(),
    )
}
