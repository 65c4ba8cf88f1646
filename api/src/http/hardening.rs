//! What every response carries and every request goes through before routing. The standard
//! parts are tower-http's: security headers (`SetResponseHeaderLayer`), CORS for the listed
//! origins only (`CorsLayer`), request ids (`SetRequestIdLayer` makes one, 32 hex characters;
//! `PropagateRequestIdLayer` returns it). What is the panel's own is the trust: an
//! `X-Request-Id` is kept only from a trusted proxy (anyone else's is dropped before tower-http
//! sees it), and in production a plain-HTTP request forwarded by a trusted proxy is redirected
//! to https; plus the request's metrics and log line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;
use crate::config::Environment;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
];

/// Headers a cross-origin script may read.
const EXPOSED: [&str; 5] = [
    "x-request-id",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
];

/// Paths a load balancer probes over plain HTTP: never redirected.
const PROBES: [&str; 2] = ["/health", "/metrics"];

/// Wraps the whole router: the outermost layer runs first.
pub fn layers(router: Router<Arc<AppState>>, state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let mut router = router.layer(from_fn_with_state(state.clone(), harden));
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    if state.config.environment == Environment::Production {
        router = router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ));
    }
    let origins: Vec<HeaderValue> = state
        .config
        .security
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if !origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
                .expose_headers(EXPOSED.map(HeaderName::from_static))
                .max_age(Duration::from_secs(600)),
        );
    }
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, SimpleUuid))
        .layer(from_fn_with_state(state.clone(), distrust_request_id))
}

/// Request ids: a v4 UUID without dashes.
#[derive(Clone, Copy)]
struct SimpleUuid;

impl MakeRequestId for SimpleUuid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn valid_request_id(id: &HeaderValue) -> bool {
    !id.is_empty() && id.len() <= 128 && id.as_bytes().iter().all(u8::is_ascii_graphic)
}

/// Whether the request's peer is a trusted proxy.
fn from_trusted_proxy(state: &AppState, request: &Request) -> bool {
    request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| {
            let ip = c.0.ip();
            state
                .config
                .security
                .trusted_proxies
                .iter()
                .any(|net| net.contains(ip))
        })
}

/// Drops an `X-Request-Id` that is not a trusted proxy's (or not a sane one), so a new one is
/// made.
async fn distrust_request_id(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let keep = from_trusted_proxy(&state, &request)
        && request
            .headers()
            .get(&REQUEST_ID)
            .is_some_and(valid_request_id);
    if !keep {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// The method as a metric label: any client can invent methods, so only the standard ones
/// get their own series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The redirect to https (production, plain HTTP forwarded by a trusted proxy), the request's
/// metrics and its log line.
async fn harden(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The route template labels the metrics; unrouted paths share one label.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let plain_http = from_trusted_proxy(&state, &request)
        && request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("http"));
    let response = if state.config.environment == Environment::Production
        && plain_http
        && !PROBES.contains(&path.as_str())
    {
        let target = format!(
            "{}{}",
            state.config.security.public_url,
            request.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(location) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    } else {
        next.run(request).await
    };
    let elapsed = started.elapsed();
    state.metrics.observe_request(
        method_label(&method),
        &route,
        response.status().as_u16(),
        elapsed.as_secs_f64(),
    );
    tracing::info!(
        request_id = %request_id,
        %method,
        path = %path,
        status = response.status().as_u16(),
        route = %route,
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}
