//! The HTTP surface over real HTTP: security headers on every response, CORS for the listed
//! origin only, request ids (kept from a trusted proxy, made otherwise), and in production the
//! redirect of plain-HTTP requests from a trusted proxy (never from an untrusted peer, never
//! for `/health`).

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tests::{DbKind, TestPki, database_url};

const APP: &str = "https://app.example.com";

async fn panel(trusted: &str, production: bool) -> (tempfile::TempDir, api::Panel) {
    security::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let mut config = tests::panel_config(&pki, database_url(DbKind::Sqlite, dir.path()).await);
    config.security.cors_origins = vec![APP.to_owned()];
    config.security.trusted_proxies = vec![api::config::Cidr::parse(trusted).unwrap()];
    if production {
        config.environment = api::config::Environment::Production;
        config.security.public_url = "https://panel.example.com".into();
        let key = dir.path().join("jwt.pem");
        security::pki::write_private(
            &key,
            &security::jwt::SigningKey::generate_ed25519_pem().unwrap(),
        )
        .unwrap();
        config.security.jwt_key_file = Some(key);
        let (_, hex) = security::envelope::LocalKek::generate();
        config.security.master_key = Some(api::config::Redacted(hex.to_string()));
    }
    let panel = api::Panel::start(config).await.unwrap();
    (dir, panel)
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, HeaderMap) {
    let response = request.send().await.unwrap();
    (response.status(), response.headers().clone())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_cors_and_request_ids() {
    let (_dir, panel) = panel("127.0.0.1/32", false).await;
    let base = format!("http://{}", panel.http_addr);
    let http = client();
    for path in ["/health", "/api/auth/me", "/no/such/route"] {
        let (_, headers) = send(http.get(format!("{base}{path}"))).await;
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(!headers.contains_key("server"), "no server banner");
        assert!(
            !headers.contains_key("strict-transport-security"),
            "HSTS is production's"
        );
        assert_eq!(headers["x-request-id"].len(), 32, "a request id is made");
        assert!(!headers.contains_key("access-control-allow-origin"));
    }
    let (_, headers) = send(
        http.get(format!("{base}/health"))
            .header("x-request-id", "edge-42"),
    )
    .await;
    assert_eq!(
        headers["x-request-id"], "edge-42",
        "kept from a trusted proxy"
    );

    // CORS: the listed origin gets its preflight answered, exactly; another gets no CORS
    // header, so the browser refuses.
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/api/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
    };
    // tower-http answers preflights itself (200); what a browser checks is the headers.
    let (status, headers) = send(preflight(APP)).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let (_, headers) = send(preflight("https://evil.example.com")).await;
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "{headers:?}"
    );
    let (_, headers) = send(http.get(format!("{base}/health")).header("origin", APP)).await;
    assert_eq!(headers["access-control-allow-origin"], APP);
    let (_, headers) = send(
        http.get(format!("{base}/health"))
            .header("origin", "http://app.example.com"),
    )
    .await;
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "scheme matters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_from_a_trusted_proxy_is_redirected_in_production() {
    let (_dir, panel) = panel("127.0.0.1/32", true).await;
    let base = format!("http://{}", panel.http_addr);
    let http = client();
    let (status, headers) = send(
        http.get(format!("{base}/api/auth/me?x=1"))
            .header("x-forwarded-proto", "http"),
    )
    .await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers["location"],
        "https://panel.example.com/api/auth/me?x=1"
    );
    assert!(
        headers["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let (status, _) = send(
        http.get(format!("{base}/health"))
            .header("x-forwarded-proto", "http"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "/health is never redirected");
    let (status, _) = send(
        http.get(format!("{base}/api/auth/me"))
            .header("x-forwarded-proto", "https"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "https passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_is_not_believed() {
    let (_dir, panel) = panel("10.0.0.0/8", true).await;
    let base = format!("http://{}", panel.http_addr);
    let (status, headers) = send(
        client()
            .get(format!("{base}/api/auth/me"))
            .header("x-forwarded-proto", "http")
            .header("x-request-id", "forged-id"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no redirect on an untrusted header"
    );
    assert_ne!(
        headers["x-request-id"], "forged-id",
        "its request id is not kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_listener_terminates_tls_itself() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    security::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let mut config = tests::panel_config(&pki, database_url(DbKind::Sqlite, dir.path()).await);
    config.http_tls = Some((pki.layout.server_cert(), pki.layout.server_key()));
    let panel = api::Panel::start(config).await.unwrap();

    let roots = security::tls::root_store(&pki.ca_certs()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(security::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(panel.http_addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("x-content-type-options: nosniff"),
        "{response}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(panel.http_addr)
        .await
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.read_to_end(&mut answer),
    )
    .await
    .expect("the plain connection is closed");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "served plain HTTP");
    panel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_template_and_status() {
    let (_dir, panel) = panel("127.0.0.1/32", false).await;
    let base = format!("http://{}", panel.http_addr);
    let http = client();
    let tenant = "0b5e3c1e-8d4a-4f57-9d0b-6f1a2b3c4d5e";
    for _ in 0..3 {
        send(http.get(format!("{base}/api/tenants/{tenant}"))).await;
    }
    send(http.get(format!("{base}/no/such/route"))).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("mamba_http_requests_total{")
                && l.contains(r#"route="/api/tenants/{tid}""#)
                && l.contains(r#"status="401""#)
        })
        .unwrap_or_else(|| panic!("no counter for the template:\n{metrics}"));
    assert!(count.ends_with(" 3"), "{count}");
    assert!(
        metrics.contains(r#"route="unmatched",status="404""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mamba_http_request_duration_seconds_bucket{method="GET",route="/api/tenants/{tid}",status="401",le="0.005"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains(tenant), "raw paths are not labels");
    for family in [
        "mamba_nodes_connected",
        "mamba_node_rejections_total",
        "mamba_refresh_token_reuse_total",
        "mamba_limiter_fallbacks_total",
        "mamba_argon2_queue_depth",
    ] {
        assert!(metrics.contains(family), "{family} missing");
    }
}

/// Reads until the panel closes `stream`; whether it did within `cap`.
async fn closed_within(stream: &mut tokio::net::TcpStream, cap: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + cap;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A connection to the panel from `source` (any 127.0.0.0/8 address).
async fn connect_from(source: &str, panel: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(panel).await.unwrap()
}

/// Item 20, with real sockets: connections that send half a request line and stop, and a
/// keep-alive connection left idle, are closed after the header timeout; connections over the
/// per-client cap and over the overall cap are closed at once, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out_and_connections_are_capped() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, _pki, mut config) = tests::roomy_setup(DbKind::Sqlite).await;
    config.http_limits = api::config::HttpLimits {
        header_timeout: Duration::from_secs(3),
        max_connections: 60,
        max_connections_per_ip: 40,
    };
    let panel = api::Panel::start(config).await.unwrap();
    let addr = panel.http_addr;

    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut stream = connect_from("127.0.0.1", addr).await;
        stream.write_all(b"GET /health HT").await.unwrap();
        slow.push(stream);
    }
    let mut idle = connect_from("127.0.0.1", addr).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: panel\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Generous beside the 3 s timeout; unbounded, they stay open for good.
    let cap = Duration::from_secs(15);
    for (n, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(stream, cap).await,
            "half a request line: connection {n} still open"
        );
    }
    assert!(
        closed_within(&mut idle, cap).await,
        "an idle keep-alive connection still open"
    );
    drop((slow, idle));

    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    let mut over_client = connect_from("127.0.0.1", addr).await;
    assert!(
        closed_within(&mut over_client, Duration::from_secs(1)).await,
        "the 41st connection of one client is closed at once"
    );
    for _ in 0..20 {
        held.push(connect_from("127.0.0.2", addr).await);
    }
    let mut over_total = connect_from("127.0.0.3", addr).await;
    assert!(
        closed_within(&mut over_total, Duration::from_secs(1)).await,
        "the 61st connection overall is closed at once"
    );
    assert!(
        !closed_within(&mut held[0], Duration::from_millis(200)).await,
        "connections within the caps stay open meanwhile"
    );
    drop(held);

    let counted = |text: &str, series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The held connections' slots free once the panel sees them close.
    let mut metrics = String::new();
    for _ in 0..50 {
        if let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await {
            metrics = response.text().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        counted(
            &metrics,
            "mamba_http_connections_refused_total{cap=\"per_ip\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        counted(
            &metrics,
            "mamba_http_connections_refused_total{cap=\"total\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metrics.contains("mamba_http_connections_open"));
    panel.shutdown().await;
}
