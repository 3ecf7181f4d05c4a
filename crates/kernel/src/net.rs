//! Client addresses: the TCP peer, or — when the peer is a trusted proxy — the right-most
//! address in `X-Forwarded-For` that is not itself a trusted proxy. One implementation for
//! the gateway (rate limits, forwarding) and for services that need the client's address
//! (auth's sign-in throttling).
//!
//! Between platform services the gateway states the client address it determined in
//! [`CLIENT_IP_HEADER`], beside its service token; a service believes it only from a caller
//! whose service token it verified (clients can never send it: the gateway strips every
//! `x-plt-*` header they send).

/// The client address the gateway determined, sent upstream with its service token.
pub const CLIENT_IP_HEADER: &str = "x-plt-client-ip";

const X_FORWARDED_FOR: &str = "x-forwarded-for";

use std::net::IpAddr;

/// An IP network (`10.0.0.0/8`, `::1/128`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (net, len) = match s.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let ip: IpAddr = s.parse().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if net.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Self { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (ip, self.net) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len))
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len))
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4
/// peers) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The trusted-proxy list.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// From validated configuration (invalid entries are skipped; config validation refuses
    /// them first).
    pub fn new(list: &[String]) -> Self {
        Self(list.iter().filter_map(|s| Cidr::parse(s)).collect())
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address. `forwarded_for` is every `X-Forwarded-For` header value in
    /// order. A malformed entry stops the walk: what is left of it cannot be believed, so the
    /// last trusted hop's view (the address before it) is used.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        self.walk(peer, forwarded_for.map(Some))
    }

    /// The client's address for a request from `peer` with these headers: every
    /// `X-Forwarded-For` line, in order, read as one list (repeated field lines are one
    /// comma-separated list, RFC 9110 5.3), so a line a client sent cannot hide the one its
    /// trusted proxy appended; a line that is not text is malformed. What the gateway and
    /// every service use.
    pub fn client_ip_from_headers(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        self.walk(
            peer,
            headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(|v| v.to_str().ok()),
        )
    }

    /// The walk behind both: `None` is a line that cannot be read.
    fn walk<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = Option<&'a str>>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for value in forwarded_for.rev() {
            let Some(value) = value else {
                return client;
            };
            for part in value.rsplit(',') {
                match parse_forwarded_ip(part) {
                    Some(ip) if self.is_trusted(ip) => client = ip,
                    Some(ip) => return ip,
                    None => return client,
                }
            }
        }
        client
    }
}

/// Every `X-Forwarded-For` line of `headers` as one list (`a, b`), for carrying it on (a
/// line that is not text becomes an entry that is no address, which stops the walk there).
/// `None` without the header.
pub fn forwarded_for(headers: &http::HeaderMap) -> Option<String> {
    let mut lines = headers.get_all(X_FORWARDED_FOR).iter();
    let first = lines.next()?;
    let text = |v: &http::HeaderValue| v.to_str().unwrap_or("(not text)").to_owned();
    let mut out = text(first);
    for v in lines {
        out.push_str(", ");
        out.push_str(&text(v));
    }
    Some(out)
}

/// One `X-Forwarded-For` element: an address, possibly `[v6]` or `v4:port`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into(), "127.0.0.1".into()]);
        // Untrusted peer: its header is ignored.
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), ["1.1.1.1"].into_iter()),
            ip("203.0.113.9")
        );
        // Trusted peer: right-most untrusted entry; spoofed left entries are ignored.
        assert_eq!(
            t.client_ip(
                ip("127.0.0.1"),
                ["6.6.6.6, 198.51.100.7, 10.0.0.2"].into_iter()
            ),
            ip("198.51.100.7")
        );
        // Several header lines are one list.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), ["6.6.6.6", "198.51.100.8"].into_iter()),
            ip("198.51.100.8")
        );
        // Only trusted hops: the left-most of them.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), ["10.0.0.5, 10.0.0.2"].into_iter()),
            ip("10.0.0.5")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), ["1.2.3.4, garbage, 10.0.0.2"].into_iter()),
            ip("10.0.0.2")
        );
        // No header: the peer.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), std::iter::empty()),
            ip("127.0.0.1")
        );
        assert_eq!(
            t.client_ip(
                ip("127.0.0.1"),
                ["[2001:db8::1]", "192.0.2.1:5555"].into_iter()
            ),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn every_forwarded_for_line_counts_and_unreadable_ones_stop_the_walk() {
        let t = TrustedProxies::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]);
        let mut h = http::HeaderMap::new();
        // The client's own line first, the line its trusted proxy appended last.
        h.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.7, 10.0.0.3".parse().unwrap());
        assert_eq!(
            t.client_ip_from_headers(ip("127.0.0.1"), &h),
            ip("198.51.100.7")
        );
        assert_eq!(
            forwarded_for(&h).as_deref(),
            Some("6.6.6.6, 198.51.100.7, 10.0.0.3")
        );
        // Carried on as one list, the walk gives the same address.
        let joined = forwarded_for(&h).unwrap();
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), [joined.as_str()].into_iter()),
            ip("198.51.100.7")
        );
        // A line that is not text: the walk stops at the last trusted hop before it.
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        h.append("x-forwarded-for", "10.0.0.9".parse().unwrap());
        assert_eq!(
            t.client_ip_from_headers(ip("127.0.0.1"), &h),
            ip("10.0.0.9")
        );
        let joined = forwarded_for(&h).unwrap();
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), [joined.as_str()].into_iter()),
            ip("10.0.0.9")
        );
        // From an untrusted peer none of it matters; without the header, the peer.
        assert_eq!(
            t.client_ip_from_headers(ip("203.0.113.1"), &h),
            ip("203.0.113.1")
        );
        assert_eq!(
            t.client_ip_from_headers(ip("127.0.0.1"), &http::HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(forwarded_for(&http::HeaderMap::new()), None);
    }
}
