//! The production preflight through the real `api` binary: one bad value per check → a non-zero
//! exit naming the variable, from `api preflight` and from `api serve`, which never listens;
//! the good configuration → it passes and the panel starts, logging JSON without secrets.
//! Includes the seed outages: a signing key of the wrong type and tokens whose audience nobody
//! configured.

use std::path::Path;
use std::time::Duration;

use security::jwt::SigningKey;
use security::pki::{self, LeafKind, LeafSpec};
use tests::{DbKind, Proc, RedisServer, TestPki, database_url, panel_env, run};
use time::OffsetDateTime;

type Env = Vec<(String, String)>;

/// A production configuration that passes: migrated PostgreSQL, Redis, keys 0600.
struct Good {
    dir: tempfile::TempDir,
    pki: TestPki,
    _redis: RedisServer,
    env: Env,
}

async fn good() -> Good {
    security::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let redis = RedisServer::start().await;
    let db = database_url(DbKind::Postgres, dir.path()).await;
    let jwt_key = dir.path().join("jwt.pem");
    pki::write_private(&jwt_key, &SigningKey::generate_ed25519_pem().unwrap()).unwrap();
    let (_, master) = security::envelope::LocalKek::generate();
    let mut env = panel_env(&pki, &db, "127.0.0.1:0");
    for (name, value) in [
        ("PANEL_ENV", "production"),
        ("REDIS_URL", redis.url().as_str()),
        ("MASTER_ENCRYPTION_KEY", master.as_str()),
        ("JWT_PRIVATE_KEY_FILE", &jwt_key.display().to_string()),
        ("JWT_AUDIENCE", "mamba-panel"),
        ("SMTP_URL", "smtp://127.0.0.1:2525"),
        ("PANEL_PUBLIC_URL", "https://panel.example.com"),
        ("CORS_ORIGINS", "https://app.example.com"),
    ] {
        env.push((name.to_owned(), value.to_owned()));
    }
    let (ok, _, err) = run("api", &["migrate"], &env, dir.path());
    assert!(ok, "migrate: {err}");
    Good {
        dir,
        pki,
        _redis: redis,
        env,
    }
}

fn with(env: &Env, name: &str, value: &str) -> Env {
    let mut env = without(env, name);
    env.push((name.to_owned(), value.to_owned()));
    env
}

fn without(env: &Env, name: &str) -> Env {
    env.iter().filter(|(n, _)| n != name).cloned().collect()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    pki::write_private(&path, contents).unwrap();
    path.display().to_string()
}

/// Runs `api preflight`, then `api serve`: both must fail naming `variable` (the preflight also
/// saying `what`), and the server must never listen on either of its ports.
async fn refused(env: &Env, cwd: &Path, variable: &str, what: &str) {
    let (ok, out, err) = run("api", &["preflight"], env, cwd);
    let line = out
        .lines()
        .find(|l| l.contains(&format!(" {variable}: ")) && l.contains(what))
        .unwrap_or_else(|| panic!("{variable} / {what:?} not in:\n{out}{err}"));
    assert!(!ok, "exit 0 with {line}");
    assert!(line.trim_start().starts_with("error"), "{line}");

    let (http, grpc) = (free_port(), free_port());
    let env = with(
        &with(env, "PANEL_HTTP_ADDR", &format!("127.0.0.1:{http}")),
        "PANEL_GRPC_ADDR",
        &format!("127.0.0.1:{grpc}"),
    );
    let mut serve = Proc::start("api", &["serve"], &env, cwd);
    // Probe both ports for as long as it runs: neither may ever accept.
    let started = std::time::Instant::now();
    let status = loop {
        for port in [http, grpc] {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "serve listens on {port} despite {line}"
            );
        }
        if let Some(status) = serve.try_exit() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve still running"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let log = serve.log();
    assert!(!status.success(), "serve started despite {line}");
    assert!(
        log.contains(variable),
        "serve did not name {variable}:\n{log}"
    );
    assert!(!log.contains("panel listening"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_names_its_variable() {
    let good = good().await;
    let (env, cwd) = (&good.env, good.dir.path());
    let (ok, out, err) = run("api", &["preflight"], env, cwd);
    assert!(ok, "the good configuration fails:\n{out}{err}");
    assert!(out.contains("passed"), "{out}");

    // The database: PostgreSQL, reachable, migrated.
    refused(
        &with(env, "DATABASE_URL", "sqlite://x.db?mode=rwc"),
        cwd,
        "DATABASE_URL",
        "PostgreSQL",
    )
    .await;
    refused(
        &with(env, "DATABASE_URL", "postgres://mamba@127.0.0.1:1/mamba"),
        cwd,
        "DATABASE_URL",
        "cannot connect",
    )
    .await;
    let fresh = database_url(DbKind::Postgres, cwd).await;
    refused(
        &with(env, "DATABASE_URL", &fresh),
        cwd,
        "DATABASE_URL",
        "pending",
    )
    .await;

    // Redis: set and answering.
    refused(&without(env, "REDIS_URL"), cwd, "REDIS_URL", "not set").await;
    refused(
        &with(env, "REDIS_URL", "redis://127.0.0.1:1"),
        cwd,
        "REDIS_URL",
        "PING",
    )
    .await;

    // The master key: present, 64 hex, not one byte, not the development one.
    refused(
        &without(env, "MASTER_ENCRYPTION_KEY"),
        cwd,
        "MASTER_ENCRYPTION_KEY",
        "not set",
    )
    .await;
    refused(
        &with(env, "MASTER_ENCRYPTION_KEY", "abc123"),
        cwd,
        "MASTER_ENCRYPTION_KEY",
        "64 hex",
    )
    .await;
    refused(
        &with(env, "MASTER_ENCRYPTION_KEY", &"zz".repeat(32)),
        cwd,
        "MASTER_ENCRYPTION_KEY",
        "hex",
    )
    .await;
    refused(
        &with(env, "MASTER_ENCRYPTION_KEY", &"00".repeat(32)),
        cwd,
        "MASTER_ENCRYPTION_KEY",
        "one byte",
    )
    .await;
    let (_, dev_key) = security::envelope::LocalKek::generate();
    std::fs::create_dir_all(cwd.join("data")).unwrap();
    write(cwd, "data/master.key", dev_key.as_str());
    refused(
        &with(env, "MASTER_ENCRYPTION_KEY", dev_key.as_str()),
        cwd,
        "MASTER_ENCRYPTION_KEY",
        "development key",
    )
    .await;
    refused(
        &with(env, "MASTER_ENCRYPTION_KEY", &dev_key.to_uppercase()),
        cwd,
        "MASTER_ENCRYPTION_KEY",
        "development key",
    )
    .await;
    refused(
        &with(env, "MASTER_ENCRYPTION_KEYS_RETIRED", "abc123:00ff"),
        cwd,
        "MASTER_ENCRYPTION_KEYS_RETIRED",
        "64 hex",
    )
    .await;

    // The signing key: present, Ed25519 or P-256 (seed outage: a key of the wrong type).
    refused(
        &without(env, "JWT_PRIVATE_KEY_FILE"),
        cwd,
        "JWT_PRIVATE_KEY_FILE",
        "not set",
    )
    .await;
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384 = write(cwd, "p384.pem", &p384.serialize_pem());
    refused(
        &with(env, "JWT_PRIVATE_KEY_FILE", &p384),
        cwd,
        "JWT_PRIVATE_KEY_FILE",
        "not an Ed25519 or P-256 key",
    )
    .await;
    let hmac = write(cwd, "hmac.key", "a-shared-hmac-secret-is-not-a-key-pair\n");
    refused(
        &with(env, "JWT_PRIVATE_KEY_FILE", &hmac),
        cwd,
        "JWT_PRIVATE_KEY_FILE",
        "no PKCS#8 private key",
    )
    .await;
    let cert = good.pki.layout.server_cert().display().to_string();
    refused(
        &with(env, "JWT_PRIVATE_KEY_FILE", &cert),
        cwd,
        "JWT_PRIVATE_KEY_FILE",
        "no PKCS#8 private key",
    )
    .await;
    refused(
        &with(env, "JWT_PRIVATE_KEY_FILE", "/nonexistent/jwt.pem"),
        cwd,
        "JWT_PRIVATE_KEY_FILE",
        "cannot read",
    )
    .await;
    refused(
        &with(env, "JWT_ISSUER", "http://panel.example.com"),
        cwd,
        "JWT_ISSUER",
        "not https",
    )
    .await;
    // Seed outage: tokens minted for an audience nobody configured.
    refused(
        &without(env, "JWT_AUDIENCE"),
        cwd,
        "JWT_AUDIENCE",
        "no client was configured for",
    )
    .await;
    // Sign-then-verify against the JWKS: an active key named like a retired one publishes the
    // kid twice, and a client cannot tell which key verifies.
    let retired_pem = SigningKey::generate_ed25519_pem().unwrap();
    let retired_kid = SigningKey::from_pem(&retired_pem).unwrap().kid().to_owned();
    let retired = write(cwd, "retired.pem", &retired_pem);
    let clash = with(
        &with(env, "JWT_RETIRED_KEY_FILES", &retired),
        "JWT_ACTIVE_KID",
        &retired_kid,
    );
    refused(
        &clash,
        cwd,
        "JWT_PRIVATE_KEY_FILE",
        "fails against the panel's own JWKS",
    )
    .await;

    // TLS: exists, parses, key matches, more than 7 days left.
    refused(
        &with(env, "PANEL_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        cwd,
        "PANEL_TLS_CERT_FILE",
        "cannot read",
    )
    .await;
    let garbage = write(
        cwd,
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    refused(
        &with(env, "PANEL_CA_CERT", &garbage),
        cwd,
        "PANEL_CA_CERT",
        "garbage.pem",
    )
    .await;
    let other = good.pki.node("other-node");
    refused(
        &with(
            env,
            "PANEL_TLS_KEY_FILE",
            &other.key_path.display().to_string(),
        ),
        cwd,
        "PANEL_TLS_KEY_FILE",
        "is not the key of the certificate",
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let hosts = ["panel.example.com".to_owned()];
    let short = good.pki.issue(LeafSpec::new(
        LeafKind::Server,
        "mamba-panel",
        &hosts,
        now,
        5,
    ));
    let short_env = with(
        &with(
            env,
            "PANEL_TLS_CERT_FILE",
            &short.cert_path.display().to_string(),
        ),
        "PANEL_TLS_KEY_FILE",
        &short.key_path.display().to_string(),
    );
    refused(&short_env, cwd, "PANEL_TLS_CERT_FILE", "expires in").await;

    // Mail and URLs.
    refused(&without(env, "SMTP_URL"), cwd, "SMTP_URL", "not set").await;
    refused(
        &with(env, "PANEL_PUBLIC_URL", "http://panel.example.com"),
        cwd,
        "PANEL_PUBLIC_URL",
        "not https",
    )
    .await;
    refused(
        &with(env, "PANEL_PUBLIC_URL", "https://203.0.113.7"),
        cwd,
        "PANEL_PUBLIC_URL",
        "IP address",
    )
    .await;
    refused(
        &with(env, "PANEL_PUBLIC_URL", "https://panel.example.com/app"),
        cwd,
        "PANEL_PUBLIC_URL",
        "path",
    )
    .await;
    refused(
        &with(env, "CORS_ORIGINS", "https://[2001:db8::1]"),
        cwd,
        "CORS_ORIGINS",
        "IP address",
    )
    .await;
    refused(
        &with(env, "CORS_ORIGINS", "https://*.example.com"),
        cwd,
        "CORS_ORIGINS",
        "wildcard",
    )
    .await;
    refused(
        &with(env, "CORS_ORIGINS", "http://app.example.com"),
        cwd,
        "CORS_ORIGINS",
        "not https",
    )
    .await;

    // Key files readable by the owner only.
    let jwt_key = good.dir.path().join("jwt.pem");
    set_mode(&jwt_key, 0o644);
    refused(env, cwd, "JWT_PRIVATE_KEY_FILE", "chmod 600").await;
    set_mode(&jwt_key, 0o600);
    set_mode(&good.pki.layout.server_key(), 0o640);
    refused(env, cwd, "PANEL_TLS_KEY_FILE", "chmod 600").await;
    set_mode(&good.pki.layout.server_key(), 0o600);

    // Every problem at once, and as JSON for machines.
    let many = with(
        &without(&without(env, "SMTP_URL"), "REDIS_URL"),
        "PANEL_PUBLIC_URL",
        "http://x",
    );
    let (ok, out, _) = run("api", &["preflight", "--json"], &many, cwd);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["environment"], "production");
    let named: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["level"] == "error")
        .map(|f| f["variable"].as_str().unwrap())
        .collect();
    for variable in ["SMTP_URL", "REDIS_URL", "PANEL_PUBLIC_URL"] {
        assert!(named.contains(&variable), "{variable} not in {named:?}");
    }
    assert!(!out.contains(&master_key(env)), "the master key is printed");

    // Development: the same checks are warnings, and the exit is 0.
    let dev = with(&without(env, "SMTP_URL"), "PANEL_ENV", "development");
    let (ok, out, _) = run("api", &["preflight"], &dev, cwd);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("warning SMTP_URL")),
        "{out}"
    );
}

fn master_key(env: &Env) -> String {
    env.iter()
        .find(|(n, _)| n == "MASTER_ENCRYPTION_KEY")
        .map(|(_, v)| v.clone())
        .unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_on_a_good_preflight_and_logs_json_without_secrets() {
    let good = good().await;
    let port = free_port();
    let env = with(&good.env, "PANEL_HTTP_ADDR", &format!("127.0.0.1:{port}"));
    let (panel, _grpc) = tests::start_panel(good.dir.path(), &env).await;
    let (status, body) =
        tests::http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/health").await;
    assert_eq!(status, 200, "{body}");

    // Production logs: one JSON object per line, the request id in the request's line, and
    // never a presented password or token.
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "a@example.com", "password": "MARKER-password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);
    let request_id = login.headers()["x-request-id"].to_str().unwrap().to_owned();
    for (path, body, bearer) in [
        (
            "/api/auth/refresh",
            serde_json::json!({"refresh_token": "MARKER-refresh"}),
            None,
        ),
        (
            "/api/auth/logout-all",
            serde_json::json!({}),
            Some("MARKER.access.token"),
        ),
    ] {
        let mut request = http.post(format!("{base}{path}")).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{path}");
    }
    let line = panel
        .wait_for_line(
            &format!("\"request_id\":\"{request_id}\""),
            Duration::from_secs(10),
        )
        .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["path"], "/api/auth/login");
    assert_eq!(line["status"], 401);
    let log = panel.log();
    for line in log.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert!(
        !log.contains("MARKER"),
        "a presented secret reached the log:\n{log}"
    );
    drop(panel);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
