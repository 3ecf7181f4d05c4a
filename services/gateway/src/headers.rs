//! Every rule about which headers cross the gateway, in one place: hop-by-hop headers
//! (RFC 9110 §7.6.1) never cross in either direction; reserved headers (`x-user-*`,
//! `x-plt-*`, `grpc-timeout`) are never taken from a client; `Host`, `Expect` and the
//! `X-Forwarded-*` family are rewritten; the verified identity and what the gateway vouches
//! for (its service token, the client's address) are added. The client's `traceparent` and
//! `tracestate` are replaced by the gateway's own span's (added per attempt in `upstream`).

use crate::edge::Caller;
use axum::http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use plt_contracts::service_identity::SERVICE_TOKEN_HEADER;
use plt_kernel::net::CLIENT_IP_HEADER;
use std::net::IpAddr;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and the
/// proxy-only ones; never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The header names the `Connection` header lists (hop-by-hop too).
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none: one pass over the names instead of a removal per name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    for n in connection_listed(headers) {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
}

/// Headers a client may not send upstream: identities are the gateway's to assert, and
/// `x-plt-*` are the platform's own (service credentials, deadlines).
fn is_reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-user-") || n.starts_with("x-plt-") || n == "grpc-timeout"
}

/// An address as a header value (always valid: digits, dots, colons and hex).
fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("0.0.0.0"))
}

/// The headers sent upstream: the client's, less hop-by-hop and reserved ones, `Host` and
/// `Expect`; plus `X-Forwarded-*` (`X-Forwarded-Proto`/`-Host` kept only from a trusted
/// peer), the verified caller (`x-user-id`, `x-user-scope`) and, when the gateway has its
/// token for the target, `x-plt-service-token` with `x-plt-client-ip`. Built in one pass, as
/// a list (written out as it is).
pub fn for_upstream(
    parts: &Parts,
    peer: Option<IpAddr>,
    trusted_peer: bool,
    caller: Option<&Caller>,
    vouched: Option<(HeaderValue, IpAddr)>,
) -> Vec<(HeaderName, HeaderValue)> {
    static X_PLT_CLIENT_IP: HeaderName = HeaderName::from_static(CLIENT_IP_HEADER);
    static X_PLT_SERVICE_TOKEN: HeaderName = HeaderName::from_static(SERVICE_TOKEN_HEADER);
    static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
    static X_USER_SCOPE: HeaderName = HeaderName::from_static("x-user-scope");
    let incoming = &parts.headers;
    // Names the `Connection` header lists are hop-by-hop too (rare).
    let listed = connection_listed(incoming);
    let mut h = Vec::with_capacity(incoming.len() + 6);
    let (mut has_proto, mut has_host) = (false, false);
    for (name, value) in incoming {
        let forwarded_kept = trusted_peer
            && ((*name == X_FORWARDED_PROTO && !has_proto)
                || (*name == X_FORWARDED_HOST && !has_host));
        let keep = !(is_hop_by_hop(name)
            || is_reserved(name)
            || name == header::HOST
            // The gateway answered `Expect: 100-continue` itself (by reading the body).
            || name == header::EXPECT
            // The trace context goes on as the gateway's own span (see `upstream`).
            || name == "traceparent"
            || name == "tracestate"
            || *name == X_FORWARDED_FOR
            || ((*name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST) && !forwarded_kept)
            || listed.contains(name));
        if keep {
            has_proto |= *name == X_FORWARDED_PROTO;
            has_host |= *name == X_FORWARDED_HOST;
            h.push((name.clone(), value.clone()));
        }
    }
    // X-Forwarded-For: what came, plus the peer.
    if let Some(p) = peer {
        let mut chain = String::new();
        for v in incoming.get_all(&X_FORWARDED_FOR) {
            if let Ok(v) = v.to_str() {
                chain.push_str(v);
                chain.push_str(", ");
            }
        }
        chain.push_str(&p.to_string());
        if let Ok(v) = HeaderValue::from_str(&chain) {
            h.push((X_FORWARDED_FOR.clone(), v));
        }
    }
    if !has_proto {
        h.push((X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http")));
    }
    if !has_host {
        let host = incoming.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if let Some(v) = host {
            h.push((X_FORWARDED_HOST.clone(), v));
        }
    }
    if let Some(c) = caller {
        if let Some(v) = &c.id_header {
            h.push((X_USER_ID.clone(), v.clone()));
        }
        if let Some(v) = &c.scope_header {
            h.push((X_USER_SCOPE.clone(), v.clone()));
        }
    }
    // What the gateway vouches for: its own credential and the client's address.
    if let Some((token, client_ip)) = vouched {
        h.push((X_PLT_SERVICE_TOKEN.clone(), token));
        h.push((X_PLT_CLIENT_IP.clone(), ip_header(client_ip)));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers() {
        for n in [
            "x-user-id",
            "x-user-roles",
            "x-plt-service-token",
            "x-plt-timeout-ms",
            "grpc-timeout",
        ] {
            assert!(is_reserved(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!is_reserved(&HeaderName::from_static("x-request-id")));
    }

    /// What services audit about the end user crosses: the client's `User-Agent` as sent,
    /// and the client address only as the gateway states it (a client's own claim dropped).
    #[test]
    fn the_user_agent_crosses_and_the_client_address_is_the_gateways() {
        let (parts, ()) = http::Request::builder()
            .uri("/api/v1/auth/login")
            .header(header::USER_AGENT, "curl/8.5.0")
            .header(CLIENT_IP_HEADER, "6.6.6.6")
            .body(())
            .unwrap()
            .into_parts();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let out = for_upstream(
            &parts,
            Some(client),
            false,
            None,
            Some((HeaderValue::from_static("svc-token"), client)),
        );
        let get = |n: &str| -> Vec<&str> {
            out.iter()
                .filter(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(get("user-agent"), ["curl/8.5.0"]);
        assert_eq!(get(CLIENT_IP_HEADER), ["203.0.113.9"]);
    }
}
