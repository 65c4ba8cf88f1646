//! Request guards: the client IP (`X-Forwarded-For` believed only from `TRUSTED_PROXIES`),
//! and per-class rate limits with `X-RateLimit-*` headers, counted per IPv4 address or IPv6 /64.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use security::limiter::{Decision, Rule};

use super::error::ApiError;
use crate::config::Cidr;
use crate::{AppState, Error};

/// Classes of limited requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Login, per IP.
    Login,
    /// Registration, per IP.
    Register,
    /// Password reset requests, per IP.
    PasswordReset,
    /// Email verification and resend, per IP.
    Verify,
    /// Node enrolment with a join token, per IP.
    Enroll,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Login => "login",
            Class::Register => "register",
            Class::PasswordReset => "password_reset",
            Class::Verify => "verify",
            Class::Enroll => "enroll",
        }
    }

    fn rule(self, state: &AppState) -> Rule {
        let limits = &state.config.security.rate_limits;
        match self {
            Class::Login => limits.login,
            Class::Register => limits.register,
            Class::PasswordReset => limits.password_reset,
            Class::Verify => limits.verify,
            Class::Enroll => limits.enroll,
        }
    }
}

/// The client's address: the peer, or from a trusted proxy the right-most untrusted
/// `X-Forwarded-For` entry.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// What per-IP limits and the block list count under: an IPv4 address, or the /64 network
    /// of an IPv6 one (a single host is given a whole /64 and can rotate through it).
    pub fn limit_key(self) -> String {
        limit_key(self.0)
    }
}

/// See [`ClientIp::limit_key`]; IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ipnet::Ipv6Net::new(v6, 64)
                .map_or_else(|_| v6.to_string(), |net| net.trunc().to_string()),
        },
    }
}

impl axum::extract::FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(ClientIp(from_forwarded(
            peer,
            &parts.headers,
            &state.config.security.trusted_proxies,
        )))
    }
}

fn from_forwarded(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .copied()
        .find(|&ip| !is_trusted(ip))
        .or(hops.first().copied())
        .unwrap_or(peer)
}

/// Middleware: counts the request against `class` for the client IP; answers 429 when over.
pub async fn limit(
    state: Arc<AppState>,
    class: Class,
    ClientIp(ip): ClientIp,
    request: Request,
    next: Next,
) -> Response {
    let decision = state
        .limits
        .check(
            &format!("{}:{}", class.name(), limit_key(ip)),
            class.rule(&state),
        )
        .await;
    respond_limited(decision, state.limits.now_ms(), request, next).await
}

/// Runs the request when `decision` allows it (429 otherwise) and adds the `X-RateLimit-*`
/// headers to the response.
pub(super) async fn respond_limited(
    decision: Decision,
    now_ms: i64,
    request: Request,
    next: Next,
) -> Response {
    let response = if decision.allowed {
        next.run(request).await
    } else {
        ApiError::from(Error::RateLimited {
            retry_after_secs: decision.retry_after_secs(now_ms),
        })
        .into_response()
    };
    with_limit_headers(&decision, response)
}

/// Adds the `X-RateLimit-*` headers of `decision` to `response`.
pub(super) fn with_limit_headers(decision: &Decision, mut response: Response) -> Response {
    let reset = DateTime::<Utc>::from_timestamp_millis(decision.reset_at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", decision.limit.to_string()),
        ("x-ratelimit-remaining", decision.remaining.to_string()),
        ("x-ratelimit-reset", reset),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = vec![
            Cidr::parse("127.0.0.1/32").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.1, 10.1.1.1"),
        );
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(
            from_forwarded(local, &headers, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(from_forwarded(stranger, &headers, &trusted), stranger);
        assert_eq!(
            from_forwarded(local, &headers, &[]),
            local,
            "no trusted proxies: header ignored"
        );
        assert_eq!(from_forwarded(local, &HeaderMap::new(), &trusted), local);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let key = |ip: &str| limit_key(ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
