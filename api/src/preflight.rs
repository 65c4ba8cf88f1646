//! The preflight: every check that stands between a configuration and a panel that is safe to
//! run in production, all made before any port opens, all reported at once.
//!
//! `api preflight` prints the report; `api serve` runs it first and, in production, refuses to
//! start on any error. In development the same checks run but their findings are warnings:
//! SQLite, an in-memory limiter and a file outbox are fine on a laptop.
//!
//! Each finding names the variable (or file) and what is wrong with it, never a secret's value.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use rustls_pki_types::CertificateDer;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use security::jwt::{Claims, KeyRing};
use serde_json::json;
use time::OffsetDateTime;

use crate::config::*;
use crate::db;

/// Certificates closer than this to expiry fail the preflight.
const FAIL_DAYS: i64 = 7;
/// Certificates closer than this to expiry are warned about.
const WARN_DAYS: i64 = 30;
/// How long a dependency may take to answer.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(5);

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The panel must not start (in production).
    Error,
    /// Worth fixing; never stops the panel.
    Warning,
}

/// One problem: the variable or file it is about, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub level: Level,
    /// The environment variable (or file) at fault.
    pub subject: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

/// Everything the preflight found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The environment the checks ran for.
    pub environment: Environment,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the panel may start: no errors.
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Error)
    }

    fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// The report for people: a summary line, then one line per finding.
    pub fn text(&self) -> String {
        let mut out = format!(
            "preflight ({}): {} — {} error(s), {} warning(s)\n",
            environment_name(self.environment),
            if self.passed() { "passed" } else { "FAILED" },
            self.count(Level::Error),
            self.count(Level::Warning),
        );
        for f in &self.findings {
            let level = match f.level {
                Level::Error => "error",
                Level::Warning => "warning",
            };
            out.push_str(&format!("  {level:<7} {}: {}\n", f.subject, f.message));
        }
        out
    }

    /// The report for machines.
    pub fn json(&self) -> serde_json::Value {
        let findings: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "level": match f.level { Level::Error => "error", Level::Warning => "warning" },
                    "variable": f.subject,
                    "message": f.message,
                })
            })
            .collect();
        json!({
            "environment": environment_name(self.environment),
            "passed": self.passed(),
            "errors": self.count(Level::Error),
            "warnings": self.count(Level::Warning),
            "findings": findings,
        })
    }
}

fn environment_name(environment: Environment) -> &'static str {
    match environment {
        Environment::Development => "development",
        Environment::Production => "production",
    }
}

/// Collects findings; in development what would be an error is a warning.
struct Findings {
    environment: Environment,
    list: Vec<Finding>,
}

impl Findings {
    /// A problem that stops a production panel.
    fn fail(&mut self, subject: &str, message: impl Into<String>) {
        let level = match self.environment {
            Environment::Production => Level::Error,
            Environment::Development => Level::Warning,
        };
        self.push(level, subject, message);
    }

    fn warn(&mut self, subject: &str, message: impl Into<String>) {
        self.push(Level::Warning, subject, message);
    }

    fn push(&mut self, level: Level, subject: &str, message: impl Into<String>) {
        self.list.push(Finding {
            level,
            subject: subject.to_owned(),
            message: message.into(),
        });
    }
}

/// Runs every check against the configuration read through `lookup`.
pub async fn run(lookup: impl Fn(&str) -> Option<String>) -> Report {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let (config, errors) = Config::parse(get);
    let mut findings = Findings {
        environment: config.environment,
        list: Vec::new(),
    };
    // What does not even parse stops the panel in any environment.
    for error in &errors {
        findings.push(Level::Error, &error.variable, &error.message);
    }
    let db = check_database(&config, &mut findings).await;
    check_redis(&config, &mut findings).await;
    check_master_key(&config, db.as_ref(), &mut findings).await;
    check_signing_key(&config, &get, &mut findings);
    check_tls(&config, &mut findings);
    check_mail_and_urls(&config, &mut findings);
    check_key_file_modes(&config, &mut findings);
    if let Some(db) = db {
        let _ = db.close().await;
    }
    Report {
        environment: config.environment,
        findings: findings.list,
    }
}

/// PostgreSQL, reachable, schema current. Returns the connection for later checks when the
/// schema is current.
async fn check_database(config: &Config, findings: &mut Findings) -> Option<DatabaseConnection> {
    let url = &config.database_url;
    if url.starts_with("sqlite:") {
        findings.fail(
            DATABASE_URL,
            "is SQLite: production needs PostgreSQL (postgres://…)",
        );
    }
    let db = match tokio::time::timeout(DEPENDENCY_TIMEOUT, db::connect(url)).await {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            findings.fail(DATABASE_URL, format!("cannot connect: {e}"));
            return None;
        }
        Err(_) => {
            findings.fail(
                DATABASE_URL,
                format!(
                    "cannot connect: no answer within {}s",
                    DEPENDENCY_TIMEOUT.as_secs()
                ),
            );
            return None;
        }
    };
    let pending = match db::Migrator::get_pending_migrations(&db).await {
        Ok(pending) => pending,
        Err(e) => {
            findings.fail(
                DATABASE_URL,
                format!("cannot read the migration state: {e}"),
            );
            return None;
        }
    };
    if pending.is_empty() {
        return Some(db);
    }
    // `api serve` migrates a development database itself; production waits for `api migrate`.
    if config.environment == Environment::Production {
        findings.fail(
            DATABASE_URL,
            format!(
                "{} migration(s) pending ({}…): run `api migrate` first",
                pending.len(),
                pending
                    .first()
                    .map(|m| m.name().to_owned())
                    .unwrap_or_default()
            ),
        );
    }
    None // the later checks read tables that may not exist yet
}

/// Set, and answering PING.
async fn check_redis(config: &Config, findings: &mut Findings) {
    let Some(url) = &config.security.redis_url else {
        findings.fail(
            REDIS_URL,
            "not set: rate limits would be kept per process, in memory",
        );
        return;
    };
    let ping = async {
        let limiter = security::limiter::RedisLimiter::connect(url, "").await?;
        limiter.ping().await
    };
    match tokio::time::timeout(DEPENDENCY_TIMEOUT, ping).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => findings.fail(REDIS_URL, format!("no answer to PING: {e}")),
        Err(_) => findings.fail(
            REDIS_URL,
            format!("no answer to PING within {}s", DEPENDENCY_TIMEOUT.as_secs()),
        ),
    }
}

/// Present, well-formed, not the development one, and the key the stored secrets were sealed
/// under.
async fn check_master_key(
    config: &Config,
    db: Option<&DatabaseConnection>,
    findings: &mut Findings,
) {
    let identity = &config.security;
    let Some(key) = &identity.master_key else {
        findings.fail(
            MASTER_ENCRYPTION_KEY,
            "not set: 64 hex characters of a random 256-bit key are required",
        );
        return;
    };
    let dev_key = identity.data_dir.join("master.key");
    // Compared by key id, so another spelling of the same key (upper case, spaces) is caught.
    let id_of = |hex: &str| {
        use security::envelope::KeyEncryptionKey;
        security::envelope::LocalKek::from_hex(hex)
            .ok()
            .map(|k| k.id().to_owned())
    };
    let dev_id = std::fs::read_to_string(&dev_key)
        .ok()
        .and_then(|hex| id_of(&hex));
    if dev_id.is_some() && dev_id == id_of(&key.0) {
        findings.fail(
            MASTER_ENCRYPTION_KEY,
            format!(
                "is the development key generated into {}: make a new one for production",
                dev_key.display()
            ),
        );
    }
    let vault = match crate::secrets::Vault::load(identity, Environment::Production) {
        Ok(vault) => vault,
        Err(e) => {
            fail_with(findings, &e, MASTER_ENCRYPTION_KEY);
            return;
        }
    };
    if let Some(db) = db
        && let Err(e) = vault.verify(db).await
    {
        fail_with(findings, &e, MASTER_ENCRYPTION_KEY);
    }
}

/// Readable, Ed25519 or P-256, explicitly configured audience, and a token signed with it
/// verifies against the published JWKS for the configured issuer and audiences.
fn check_signing_key(
    config: &Config,
    get: &dyn Fn(&str) -> Option<String>,
    findings: &mut Findings,
) {
    let identity = &config.security;
    // Unset, the issuer is PANEL_PUBLIC_URL, which is checked on its own.
    if let Some(issuer) = get(JWT_ISSUER)
        && let Err(problem) = public_origin(&issuer, Tail::Path)
    {
        findings.fail(JWT_ISSUER, problem);
    }
    if get(JWT_AUDIENCE).is_none() {
        findings.fail(
            JWT_AUDIENCE,
            format!(
                "not set: tokens would carry the built-in audience {:?}, which no client was configured for",
                identity.token_audience()
            ),
        );
    }
    if identity.jwt_key_file.is_none() {
        findings.fail(
            JWT_PRIVATE_KEY_FILE,
            "not set: a PKCS#8 PEM Ed25519 or P-256 private key is required",
        );
        return;
    }
    let ring = match crate::identity::keys::load(identity, Environment::Production) {
        Ok(ring) => ring,
        Err(e) => {
            fail_with(findings, &e, JWT_PRIVATE_KEY_FILE);
            return;
        }
    };
    if let Err(problem) = sign_then_verify(
        &ring,
        (&identity.jwt_issuer, identity.token_audience()),
        (&identity.jwt_issuer, &identity.jwt_audiences),
    ) {
        findings.fail(JWT_PRIVATE_KEY_FILE, problem);
    }
}

/// Signs a token as the panel issues them (`issued`: issuer, audience) and verifies it as a
/// client holding only the JWKS would (`accepted`: issuer, audiences).
fn sign_then_verify(
    ring: &KeyRing,
    issued: (&str, &str),
    accepted: (&str, &[String]),
) -> Result<(), String> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: "preflight".into(),
        sid: "preflight".into(),
        email: "preflight@invalid".into(),
        tenant_id: None,
        role: None,
        iss: issued.0.to_owned(),
        aud: issued.1.to_owned(),
        iat: now,
        exp: now + 60,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let token = ring
        .sign(&claims)
        .map_err(|e| format!("cannot sign a test token: {e}"))?;
    security::jwt::verify_with_jwks(&ring.jwks(), &token, now, accepted.0, accepted.1)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "a token signed with this key fails against the panel's own JWKS: {e} \
                 (issuer {:?}, audience {:?}; accepted issuer {:?}, audiences {:?})",
                issued.0, issued.1, accepted.0, accepted.1
            )
        })
}

/// The node channel's CA, certificate and key, and the REST listener's own if it has them.
fn check_tls(config: &Config, findings: &mut Findings) {
    let now = OffsetDateTime::now_utc();
    if let Some(ca) = read_cert(PANEL_CA_CERT, &config.ca_cert, findings) {
        check_expiry((PANEL_CA_CERT, &config.ca_cert), &ca, now, findings);
    }
    check_pair(
        (PANEL_TLS_CERT_FILE, &config.tls_cert),
        (PANEL_TLS_KEY_FILE, &config.tls_key),
        now,
        findings,
    );
    if let Some((cert, key)) = &config.http_tls {
        check_pair(
            (PANEL_HTTP_TLS_CERT_FILE, cert),
            (PANEL_HTTP_TLS_KEY_FILE, key),
            now,
            findings,
        );
    }
    match &config.node_identity.issuer {
        Some((cert, key)) => check_pair(
            (PANEL_ISSUER_CERT_FILE, cert),
            (PANEL_ISSUER_KEY_FILE, key),
            now,
            findings,
        ),
        None => findings.warn(
            PANEL_ISSUER_CERT_FILE,
            "not set: join-token enrolment and certificate renewal are off (nodes are pinned at first connection; make an issuer with `dev-ca issuer`)",
        ),
    }
}

fn check_pair(
    cert: (&str, &Path),
    key: (&str, &Path),
    now: OffsetDateTime,
    findings: &mut Findings,
) {
    let Some(leaf) = read_cert(cert.0, cert.1, findings) else {
        return;
    };
    check_expiry(cert, &leaf, now, findings);
    let Ok(key_pem) = std::fs::read_to_string(key.1) else {
        return; // reported by the configuration check
    };
    match security::pki::key_matches_cert(&key_pem, &leaf) {
        Ok(true) => {}
        Ok(false) => findings.fail(
            key.0,
            format!(
                "{} is not the key of the certificate in {}",
                key.1.display(),
                cert.1.display()
            ),
        ),
        Err(e) => findings.fail(key.0, format!("{}: {e}", key.1.display())),
    }
}

/// The first certificate of a PEM file; a finding if it is missing or does not parse.
fn read_cert(
    variable: &str,
    path: &Path,
    findings: &mut Findings,
) -> Option<CertificateDer<'static>> {
    if !path.exists() {
        return None; // reported by the configuration check
    }
    match security::tls::read_certs(path) {
        Ok(certs) => certs.into_iter().next().or_else(|| {
            findings.fail(variable, format!("{} holds no certificate", path.display()));
            None
        }),
        Err(e) => {
            findings.fail(variable, format!("{}: {e}", path.display()));
            None
        }
    }
}

fn check_expiry(
    (variable, path): (&str, &Path),
    cert: &CertificateDer<'_>,
    now: OffsetDateTime,
    findings: &mut Findings,
) {
    match security::pki::inspect(cert) {
        Err(e) => findings.fail(variable, format!("{} does not parse: {e}", path.display())),
        Ok(info) => {
            let days = info.days_left(now);
            if info.not_before > now {
                findings.fail(variable, format!("not valid before {}", info.not_before));
            } else if info.not_after <= now {
                findings.fail(variable, format!("expired on {}", info.not_after.date()));
            } else if days < FAIL_DAYS {
                findings.fail(
                    variable,
                    format!(
                        "expires in {days} day(s), on {}: renew it (at least {FAIL_DAYS} days are required)",
                        info.not_after.date()
                    ),
                );
            } else if days < WARN_DAYS {
                findings.warn(
                    variable,
                    format!("expires in {days} days, on {}", info.not_after.date()),
                );
            }
        }
    }
}

/// Real mail, and the public URL and browser origins on https with a host name.
fn check_mail_and_urls(config: &Config, findings: &mut Findings) {
    let identity = &config.security;
    if identity.smtp_url.is_none() {
        findings.fail(
            SMTP_URL,
            "not set: verification and reset mail would only be written to the outbox folder",
        );
    }
    if let Err(problem) = public_origin(&identity.public_url, Tail::Slash) {
        findings.fail(PANEL_PUBLIC_URL, problem);
    }
    for origin in &identity.cors_origins {
        if let Err(problem) = public_origin(origin, Tail::None) {
            findings.fail(CORS_ORIGINS, problem);
        }
    }
}

/// What may follow the host in a URL [`public_origin`] checks.
#[derive(Clone, Copy)]
enum Tail {
    /// Nothing: an origin (`CORS_ORIGINS`).
    None,
    /// A trailing `/` (`PANEL_PUBLIC_URL`).
    Slash,
    /// Any path (`JWT_ISSUER`).
    Path,
}

/// `https://host[:port]` followed only by what `tail` allows: no IP literal, no wildcard.
fn public_origin(url: &str, tail: Tail) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(format!("{url:?} is not https://"));
    };
    let rest = match tail {
        Tail::None => rest,
        Tail::Slash => rest.trim_end_matches('/'),
        Tail::Path => rest.split(['/', '?', '#']).next().unwrap_or(rest),
    };
    if rest.contains(['/', '?', '#']) {
        return Err(format!("{url:?} has a path; give the origin only"));
    }
    if rest.contains('*') {
        return Err(format!("{url:?} has a wildcard"));
    }
    if rest.contains('@') {
        return Err(format!("{url:?} has user information"));
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (v6, None),
        },
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(format!("{url:?} has no valid port"));
    }
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{url:?} is an IP address; use a host name"));
    }
    Ok(())
}

/// Private keys readable by the owner only.
fn check_key_file_modes(config: &Config, findings: &mut Findings) {
    let identity = &config.security;
    let mut keys: Vec<(&str, &Path)> = vec![(PANEL_TLS_KEY_FILE, &config.tls_key)];
    if let Some(file) = &identity.jwt_key_file {
        keys.push((JWT_PRIVATE_KEY_FILE, file));
    }
    for file in &identity.jwt_retired_key_files {
        keys.push((JWT_RETIRED_KEY_FILES, file));
    }
    if let Some((_, key)) = &config.http_tls {
        keys.push((PANEL_HTTP_TLS_KEY_FILE, key));
    }
    if let Some((_, key)) = &config.node_identity.issuer {
        keys.push((PANEL_ISSUER_KEY_FILE, key));
    }
    for (variable, path) in keys {
        if let Some(mode) = group_or_world_access(path) {
            findings.fail(
                variable,
                format!(
                    "{} is readable by group or others (mode {mode:04o}): chmod 600 it",
                    path.display()
                ),
            );
        }
    }
}

/// The file's permission bits when group or others have any access.
#[cfg(unix)]
fn group_or_world_access(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn group_or_world_access(_path: &Path) -> Option<u32> {
    None
}

/// Records `error` as failures of the variables it names (configuration errors name theirs),
/// or of `default`.
fn fail_with(findings: &mut Findings, error: &crate::Error, default: &str) {
    match error.config_problems() {
        [] => findings.fail(default, error.to_string()),
        problems => {
            for problem in problems {
                findings.fail(&problem.variable, &problem.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let pem = security::jwt::SigningKey::generate_ed25519_pem().unwrap();
        KeyRing::new(security::jwt::SigningKey::from_pem(&pem).unwrap(), vec![])
    }

    #[test]
    fn sign_then_verify_catches_an_audience_or_issuer_nobody_accepts() {
        let ring = ring();
        let auds = vec!["mamba-panel".to_owned()];
        assert!(
            sign_then_verify(&ring, ("https://p", "mamba-panel"), ("https://p", &auds)).is_ok()
        );
        let err =
            sign_then_verify(&ring, ("https://p", "mamba"), ("https://p", &auds)).unwrap_err();
        assert!(err.contains("wrong audience"), "{err}");
        let err = sign_then_verify(&ring, ("https://q", "mamba-panel"), ("https://p", &auds))
            .unwrap_err();
        assert!(err.contains("wrong issuer"), "{err}");
    }

    #[test]
    fn public_origins() {
        for good in [
            "https://panel.example.com",
            "https://panel.example.com:8443",
        ] {
            assert_eq!(public_origin(good, Tail::None), Ok(()), "{good}");
        }
        assert_eq!(
            public_origin("https://panel.example.com/", Tail::Slash),
            Ok(())
        );
        assert_eq!(
            public_origin("https://panel.example.com/auth", Tail::Path),
            Ok(())
        );
        assert!(public_origin("https://10.0.0.1/auth", Tail::Path).is_err());
        for bad in [
            "http://panel.example.com",
            "https://*.example.com",
            "https://panel.example.com/app",
            "https://10.0.0.1",
            "https://10.0.0.1:443",
            "https://[::1]:443",
            "https://",
            "https://user@panel.example.com",
            "https://panel.example.com:",
            "https://panel.example.com:99999",
            "https://panel.example.com:0",
            "panel.example.com",
        ] {
            assert!(public_origin(bad, Tail::None).is_err(), "{bad}");
        }
    }
}
