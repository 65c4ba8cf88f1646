//! The panel's security settings ([`SecurityConfig`]): token signing keys, audiences and
//! refresh grace, account mail, rate limits and the Redis that keeps them, trusted proxies,
//! CORS origins and the master keys of the secret vault.

use crate::error::ConfigError;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use security::limiter::Rule;

/// PEM private key (Ed25519 or P-256) that signs access tokens.
pub const JWT_PRIVATE_KEY_FILE: &str = "JWT_PRIVATE_KEY_FILE";
/// Names the active key's `kid` (default: its RFC 7638 thumbprint).
pub const JWT_ACTIVE_KID: &str = "JWT_ACTIVE_KID";
/// Comma-separated PEM keys still published and accepted, never used to sign.
pub const JWT_RETIRED_KEY_FILES: &str = "JWT_RETIRED_KEY_FILES";
/// `iss` of access tokens.
pub const JWT_ISSUER: &str = "JWT_ISSUER";
/// `aud` of access tokens; comma-separated, the first goes into new tokens.
pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
/// Seconds within which re-presenting the immediate parent of an unused refresh token gets a
/// fresh pair instead of a revocation (0 = strict, at most 60).
pub const REFRESH_REUSE_GRACE_SECS: &str = "REFRESH_REUSE_GRACE_SECS";
/// Where users reach the panel; links in mail point here.
pub const PANEL_PUBLIC_URL: &str = "PANEL_PUBLIC_URL";
/// SMTP server URL (`smtp://`, `smtps://`); unset: mail goes to the outbox folder.
pub const SMTP_URL: &str = "SMTP_URL";
/// Folder of `.eml` files when no SMTP server is configured.
pub const MAIL_OUTBOX_DIR: &str = "MAIL_OUTBOX_DIR";
/// Redis for rate limits and the event fan-out: `redis://host:port/` (one server) or
/// `redis-cluster://host:port[,host:port…]` (a Redis Cluster); unset: in-memory limits.
pub const REDIS_URL: &str = "REDIS_URL";
/// Comma-separated IPs or CIDRs whose `X-Forwarded-For` is believed.
pub const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";
/// Per-class limit overrides, e.g. `login=5/15m,api=100/1m`.
pub const RATE_LIMITS: &str = "RATE_LIMITS";
/// Browser origins allowed to call the API (CORS), comma-separated, exact (`https://app.example.com`).
pub const CORS_ORIGINS: &str = "CORS_ORIGINS";
/// The master key-encryption key, 64 hex characters; generated into `data/` in development.
pub const MASTER_ENCRYPTION_KEY: &str = "MASTER_ENCRYPTION_KEY";
/// Retired master keys, comma-separated `id:hex`, that still decrypt until `api keys rotate`.
pub const MASTER_ENCRYPTION_KEYS_RETIRED: &str = "MASTER_ENCRYPTION_KEYS_RETIRED";

/// A configured secret (a master key): never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The limit of each class of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /api/auth/login`, per IP.
    pub login: Rule,
    /// `POST /api/auth/register`, per IP.
    pub register: Rule,
    /// `POST /api/auth/password-reset`, per IP.
    pub password_reset: Rule,
    /// Email verification and resend, per IP.
    pub verify: Rule,
    /// Authenticated API calls, per user.
    pub api: Rule,
    /// `POST /api/nodes/enroll`, per IP.
    pub enroll: Rule,
    /// Uploads through the file manager (`PUT …/files/content`), per user.
    pub upload: Rule,
}

impl Default for RateLimits {
    fn default() -> Self {
        let rule = |limit, secs| Rule {
            limit,
            window: Duration::from_secs(secs),
        };
        RateLimits {
            login: rule(5, 15 * 60),
            register: rule(3, 3600),
            password_reset: rule(3, 3600),
            verify: rule(5, 3600),
            api: rule(100, 60),
            enroll: rule(10, 15 * 60),
            upload: rule(60, 60),
        }
    }
}

impl RateLimits {
    /// Applies `RATE_LIMITS` overrides to the defaults.
    pub fn parse(text: &str) -> Result<RateLimits, String> {
        let mut limits = RateLimits::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (class, rule) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not class=count/window"))?;
            let rule = Rule::parse(rule)?;
            match class.trim() {
                "login" => limits.login = rule,
                "register" => limits.register = rule,
                "password_reset" => limits.password_reset = rule,
                "verify" => limits.verify = rule,
                "api" => limits.api = rule,
                "enroll" => limits.enroll = rule,
                "upload" => limits.upload = rule,
                other => {
                    return Err(format!(
                        "unknown class {other:?} (login, register, password_reset, verify, api, enroll, upload)"
                    ));
                }
            }
        }
        Ok(limits)
    }
}

/// An IP network, for `TRUSTED_PROXIES` (ipnet's, with a bare address read as one host and
/// IPv4-mapped IPv6 peers matched as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    /// Parses `192.0.2.0/24`, `127.0.0.1` (a /32), `::1/128`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(Cidr)
            .map_err(|_| format!("{text:?} is not an IP or CIDR"))
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// The security settings: token keys and audiences, account mail, rate limits (and their
/// Redis), trusted proxies, CORS origins, the vault's master keys and the data folder that
/// development keys are generated into.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// The signing key file; `None` in development: generated under `data_dir`.
    pub jwt_key_file: Option<PathBuf>,
    /// See [`JWT_ACTIVE_KID`].
    pub jwt_active_kid: Option<String>,
    /// Retired keys, accepted and published, never used to sign.
    pub jwt_retired_key_files: Vec<PathBuf>,
    /// `iss`.
    pub jwt_issuer: String,
    /// Accepted `aud` values; the first is put in new tokens.
    pub jwt_audiences: Vec<String>,
    /// See [`REFRESH_REUSE_GRACE_SECS`].
    pub refresh_grace: Duration,
    /// See [`PANEL_PUBLIC_URL`].
    pub public_url: String,
    /// See [`SMTP_URL`].
    pub smtp_url: Option<String>,
    /// See [`MAIL_OUTBOX_DIR`].
    pub outbox_dir: PathBuf,
    /// See [`REDIS_URL`].
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (`mamba:`), so panels can share a Redis.
    pub redis_key_prefix: String,
    /// See [`TRUSTED_PROXIES`].
    pub trusted_proxies: Vec<Cidr>,
    /// See [`RATE_LIMITS`].
    pub rate_limits: RateLimits,
    /// Where development keys are generated.
    pub data_dir: PathBuf,
    /// See [`CORS_ORIGINS`].
    pub cors_origins: Vec<String>,
    /// See [`MASTER_ENCRYPTION_KEY`].
    pub master_key: Option<Redacted>,
    /// See [`MASTER_ENCRYPTION_KEYS_RETIRED`]: `(id, hex)` pairs.
    pub master_keys_retired: Vec<(String, Redacted)>,
}

impl SecurityConfig {
    /// The audience put into new access tokens: the first configured one.
    pub fn token_audience(&self) -> &str {
        self.jwt_audiences.first().map_or("", String::as_str)
    }

    /// Development defaults rooted at `data_dir`.
    pub fn development(data_dir: PathBuf) -> SecurityConfig {
        let public_url = "http://127.0.0.1:8080".to_owned();
        SecurityConfig {
            jwt_key_file: None,
            jwt_active_kid: None,
            jwt_retired_key_files: Vec::new(),
            jwt_issuer: public_url.clone(),
            jwt_audiences: vec!["mamba-panel".to_owned()],
            refresh_grace: Duration::ZERO,
            public_url,
            smtp_url: None,
            outbox_dir: data_dir.join("outbox"),
            redis_url: None,
            redis_key_prefix: "mamba:".to_owned(),
            trusted_proxies: Vec::new(),
            rate_limits: RateLimits::default(),
            data_dir,
            cors_origins: Vec::new(),
            master_key: None,
            master_keys_retired: Vec::new(),
        }
    }

    /// Reads the identity variables through `get`, pushing problems to `errors`.
    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> SecurityConfig {
        let mut config = SecurityConfig::development(PathBuf::from("data"));
        config.jwt_key_file = get(JWT_PRIVATE_KEY_FILE).map(PathBuf::from);
        config.jwt_active_kid = get(JWT_ACTIVE_KID);
        config.jwt_retired_key_files = get(JWT_RETIRED_KEY_FILES)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(url) = get(PANEL_PUBLIC_URL) {
            config.public_url = url.trim_end_matches('/').to_owned();
        }
        config.jwt_issuer = get(JWT_ISSUER).unwrap_or_else(|| config.public_url.clone());
        if let Some(auds) = get(JWT_AUDIENCE) {
            config.jwt_audiences = auds
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if config.jwt_audiences.is_empty() {
                errors.push(ConfigError::new(JWT_AUDIENCE, "names no audience"));
            }
        }
        if let Some(raw) = get(REFRESH_REUSE_GRACE_SECS) {
            match raw.parse::<u64>() {
                Ok(secs) if secs <= 60 => config.refresh_grace = Duration::from_secs(secs),
                _ => errors.push(ConfigError::new(
                    REFRESH_REUSE_GRACE_SECS,
                    format!("{raw:?} is not a number of seconds from 0 to 60"),
                )),
            }
        }
        config.smtp_url = get(SMTP_URL);
        if let Some(dir) = get(MAIL_OUTBOX_DIR) {
            config.outbox_dir = PathBuf::from(dir);
        }
        config.redis_url = get(REDIS_URL);
        if let Some(url) = &config.redis_url
            && let Err(e) = security::redis_link::Target::parse(url)
        {
            errors.push(ConfigError::new(REDIS_URL, e.to_string()));
        }
        for origin in get(CORS_ORIGINS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match origin.split_once("://") {
                Some(("https" | "http", host))
                    if !host.is_empty() && !host.contains(['/', '*', '?', '#', ' ']) =>
                {
                    config.cors_origins.push(origin.to_owned());
                }
                _ => errors.push(ConfigError::new(CORS_ORIGINS, format!(
                    "{origin:?} is not an origin like https://app.example.com (no path, no wildcard)"
                ))),
            }
        }
        config.master_key = get(MASTER_ENCRYPTION_KEY).map(Redacted);
        for item in get(MASTER_ENCRYPTION_KEYS_RETIRED)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item.split_once(':') {
                Some((id, key)) => config
                    .master_keys_retired
                    .push((id.trim().to_owned(), Redacted(key.trim().to_owned()))),
                None => errors.push(ConfigError::new(
                    MASTER_ENCRYPTION_KEYS_RETIRED,
                    "an entry is not id:hex",
                )),
            }
        }
        if let Some(list) = get(TRUSTED_PROXIES) {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match Cidr::parse(item) {
                    Ok(cidr) => config.trusted_proxies.push(cidr),
                    Err(e) => errors.push(ConfigError::new(TRUSTED_PROXIES, e.to_string())),
                }
            }
        }
        if let Some(limits) = get(RATE_LIMITS) {
            match RateLimits::parse(&limits) {
                Ok(limits) => config.rate_limits = limits,
                Err(e) => errors.push(ConfigError::new(RATE_LIMITS, e.to_string())),
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:192.0.2.1".parse().unwrap()),
            "v4-mapped"
        );
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.2".parse().unwrap())
        );
        assert!(
            Cidr::parse("10.0.0.0/7")
                .unwrap()
                .contains("11.1.1.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in ["x", "1.2.3.4/33", "::1/129", "1.2.3.4/"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limit_overrides_and_no_off_switch() {
        let limits = RateLimits::parse("login=10/1m, api=1000/1m").unwrap();
        assert_eq!(limits.login, Rule::parse("10/1m").unwrap());
        assert_eq!(limits.register, RateLimits::default().register);
        assert!(RateLimits::parse("login=0/1m").is_err());
        assert!(RateLimits::parse("login=").is_err());
        assert!(RateLimits::parse("bogus=1/1m").is_err());
    }
}
