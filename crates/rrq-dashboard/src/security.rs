//! Who may see the dashboard and change things through it.
//!
//! * Bind rule: a non-loopback listen address needs an access token.
//! * Access token (optional on loopback): `Authorization: Bearer <token>`,
//!   or the `rrq_dashboard_token` cookie that `POST /login` sets.
//! * Every action is a `POST` carrying the per-process CSRF secret in the
//!   `x-rrq-csrf` header (the page embeds it); a request whose `Origin` is
//!   not this host is refused.
//! * Without a token, only requests whose `Host` is `localhost` or a
//!   loopback address are served (DNS rebinding).
//! * Secrets are compared in constant time.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The header that carries the CSRF secret.
pub const CSRF_HEADER: &str = "x-rrq-csrf";
/// The cookie that carries the access token after a login.
pub const TOKEN_COOKIE: &str = "rrq_dashboard_token";
/// The environment variable the CLI reads the token from.
pub const TOKEN_ENV: &str = "RRQ_DASHBOARD_TOKEN";

/// Why the dashboard refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// A non-loopback address without an access token.
    #[error(
        "refusing to serve the dashboard on {0} without an access token: pass --token (or set RRQ_DASHBOARD_TOKEN), or listen on a loopback address such as 127.0.0.1:8080"
    )]
    TokenRequired(SocketAddr),
    /// An empty token.
    #[error("the dashboard access token (--token or RRQ_DASHBOARD_TOKEN) must not be empty")]
    EmptyToken,
}

/// Checks the bind rule.
pub fn check_bind(listen: SocketAddr, token: Option<&str>) -> Result<(), BindError> {
    match token {
        Some(t) if t.trim().is_empty() => Err(BindError::EmptyToken),
        Some(_) => Ok(()),
        None if listen.ip().is_loopback() => Ok(()),
        None => Err(BindError::TokenRequired(listen)),
    }
}

/// Compares two secrets without an early exit on the first differing byte.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fresh random secret (two v4 UUIDs: 244 random bits).
pub fn new_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request carries the access token.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    [bearer, cookie(headers, TOKEN_COOKIE)].into_iter().flatten().any(|given| secrets_equal(given, token))
}

/// Why an action request was refused by the CSRF check, if it was.
pub fn csrf_refusal(headers: &HeaderMap, secret: &str) -> Option<&'static str> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, h)| h);
        if host.is_none() || origin_host != host {
            return Some("the request's Origin is not this dashboard");
        }
    }
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(given) if secrets_equal(given, secret) => None,
        Some(_) => Some("wrong CSRF token (reload the page)"),
        None => Some("missing CSRF token: send the x-rrq-csrf header (GET /api/session gives it)"),
    }
}

/// Whether the `Host` header names this machine (`localhost` or a loopback
/// address). Without a token, only such requests are served, so a page that
/// rebinds its own DNS name to 127.0.0.1 cannot read the dashboard.
pub fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_loopback_binds_go_without_a_token() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(check_bind(lo, None), Ok(()));
        assert_eq!(check_bind(lo6, None), Ok(()));
        let e = check_bind(any, None).unwrap_err();
        assert_eq!(e, BindError::TokenRequired(any));
        assert!(e.to_string().contains("--token") && e.to_string().contains("RRQ_DASHBOARD_TOKEN"));
        assert_eq!(check_bind(any, Some("s3cret")), Ok(()));
        assert_eq!(check_bind(any, Some("  ")), Err(BindError::EmptyToken));
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
        assert!(!secrets_equal("", "a"));
        assert!(secrets_equal("", ""));
    }

    #[test]
    fn the_token_is_taken_from_a_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert!(!has_token(&h, "t0k"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0k"));
        assert!(has_token(&h, "t0k"));
        assert!(!has_token(&h, "other"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; rrq_dashboard_token=t0k"));
        assert!(has_token(&h, "t0k"));
        h.insert(header::COOKIE, HeaderValue::from_static("rrq_dashboard_token=t0kx"));
        assert!(!has_token(&h, "t0k"));
    }

    #[test]
    fn actions_need_the_csrf_secret_and_a_matching_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(csrf_refusal(&h, "s").unwrap().contains("missing"));
        h.insert(CSRF_HEADER, HeaderValue::from_static("x"));
        assert!(csrf_refusal(&h, "s").unwrap().contains("wrong"));
        h.insert(CSRF_HEADER, HeaderValue::from_static("s"));
        assert_eq!(csrf_refusal(&h, "s"), None);
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert_eq!(csrf_refusal(&h, "s"), None);
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(csrf_refusal(&h, "s").unwrap().contains("Origin"));
    }

    #[test]
    fn only_loopback_host_names_pass_the_rebinding_check() {
        let host = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(v));
            host_is_loopback(&h)
        };
        for ok in ["127.0.0.1:8080", "127.0.0.1", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.1.2.3:9"] {
            assert!(host(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "evil.example", "10.0.0.1:8080", "[::2]:80", "localhost.evil.example"] {
            assert!(!host(bad), "{bad}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()), "no Host header");
    }

    #[test]
    fn fresh_secrets_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }
}
