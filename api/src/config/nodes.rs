//! Node identity settings: the panel's issuing intermediate and the lifetime of the node
//! certificates it signs (join-token enrolment and renewal over the node channel).

use crate::error::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// The issuing intermediate's certificate (`certs/issuer/issuer-cert.pem`); unset: no
/// enrolment and no renewal (the panel works as before, pinning at first connection).
pub const PANEL_ISSUER_CERT_FILE: &str = "PANEL_ISSUER_CERT_FILE";
/// The issuing intermediate's private key.
pub const PANEL_ISSUER_KEY_FILE: &str = "PANEL_ISSUER_KEY_FILE";
/// Lifetime of node certificates the panel signs, in days (1–365, default 30).
pub const NODE_CERT_DAYS: &str = "NODE_CERT_DAYS";
/// Test-only: the lifetime in seconds (30–86400), overriding [`NODE_CERT_DAYS`], so that a
/// test can watch a node renew itself several times.
pub const NODE_CERT_SECS: &str = "NODE_CERT_SECS";

/// How the panel issues node certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentityConfig {
    /// The issuer's certificate (chain) and key files, when the panel issues.
    pub issuer: Option<(PathBuf, PathBuf)>,
    /// Lifetime of the certificates it signs.
    pub cert_lifetime: Duration,
}

impl Default for NodeIdentityConfig {
    fn default() -> Self {
        NodeIdentityConfig {
            issuer: None,
            cert_lifetime: Duration::from_secs(u64::from(security::pki::NODE_CERT_DAYS) * 86_400),
        }
    }
}

impl NodeIdentityConfig {
    /// Reads the variables through `get`, adding each problem to `errors`.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> NodeIdentityConfig {
        let issuer = match (get(PANEL_ISSUER_CERT_FILE), get(PANEL_ISSUER_KEY_FILE)) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => {
                errors.push(ConfigError::new(
                    PANEL_ISSUER_CERT_FILE,
                    format!("set it together with {PANEL_ISSUER_KEY_FILE}, or neither"),
                ));
                None
            }
        };
        let mut config = NodeIdentityConfig {
            issuer,
            ..NodeIdentityConfig::default()
        };
        if let Some(raw) = get(NODE_CERT_DAYS) {
            match raw.trim().parse::<u64>() {
                Ok(days @ 1..=365) => config.cert_lifetime = Duration::from_secs(days * 86_400),
                _ => errors.push(ConfigError::new(
                    NODE_CERT_DAYS,
                    format!("{raw:?} is not a number of days from 1 to 365"),
                )),
            }
        }
        if let Some(raw) = get(NODE_CERT_SECS) {
            match raw.trim().parse::<u64>() {
                Ok(secs @ 30..=86_400) => config.cert_lifetime = Duration::from_secs(secs),
                _ => errors.push(ConfigError::new(
                    NODE_CERT_SECS,
                    format!("{raw:?} is not a number of seconds from 30 to 86400"),
                )),
            }
        }
        config
    }
}
