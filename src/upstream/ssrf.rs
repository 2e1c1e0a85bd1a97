//! The SSRF guard for endpoints users define (TESTPLAN S7): such an endpoint may not reach
//! loopback, private, link-local, CGNAT, multicast, reserved or cloud-metadata addresses, in any
//! notation (decimal, octal and hex IPv4 are resolved by the system resolver first and then
//! checked; IPv4-mapped, NAT64 and 6to4 IPv6 are unwrapped). It runs when the endpoint is saved
//! and again at connect time, on the addresses actually resolved; redirects are never followed.
//! An operator can allow an exact `host:port`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is one a user endpoint may not reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, with the cloud metadata address 169.254.169.254
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10 (and Alibaba's 100.100.100.200)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 64:ff9b::/96 and 6to4 2002::/16 carry an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return forbidden_v4(Ipv4Addr::from((u32::from(seg[6]) << 16) | u32::from(seg[7])));
    }
    if seg[0] == 0x2002 {
        return forbidden_v4(Ipv4Addr::from((u32::from(seg[1]) << 16) | u32::from(seg[2])));
    }
    // IPv4-translated ::ffff:0:a.b.c.d (SIIT) carries one too.
    if seg[0..6] == [0, 0, 0, 0, 0xffff, 0] {
        return forbidden_v4(Ipv4Addr::from((u32::from(seg[6]) << 16) | u32::from(seg[7])));
    }
    // Local-use NAT64 64:ff9b:1::/48 (its IPv4 sits where the operator's prefix length puts it)
    // and Teredo 2001::/32 (an obfuscated IPv4 server and client) are refused whole.
    if (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) || (seg[0] == 0x2001 && seg[1] == 0) {
        return true;
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254)
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
        || (seg[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d
}

/// Why an endpoint was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// Not an http(s) URL with a host.
    #[error("the endpoint must be an http or https URL with a host")]
    BadUrl,
    /// The host does not resolve.
    #[error("the endpoint's host does not resolve")]
    Unresolvable,
    /// It resolves to an address user endpoints may not reach.
    #[error("the endpoint resolves to a loopback, private, link-local or metadata address")]
    Forbidden,
}

/// The host and port of an http(s) URL (IPv6 brackets removed).
pub fn host_port(url: &str) -> Result<(String, u16), SsrfError> {
    let (scheme, rest) = url.split_once("://").ok_or(SsrfError::BadUrl)?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(SsrfError::BadUrl),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(SsrfError::BadUrl);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(SsrfError::BadUrl)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| SsrfError::BadUrl)?,
            None if after.is_empty() => default_port,
            None => return Err(SsrfError::BadUrl),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| SsrfError::BadUrl)?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(SsrfError::BadUrl);
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Whether `host:port` is on the operator's allowlist (exact match).
pub fn allowed(allow: &[String], host: &str, port: u16) -> bool {
    let wanted = format!("{host}:{port}");
    allow.iter().any(|a| a.eq_ignore_ascii_case(&wanted))
}

/// For a URL whose host is an IP literal (which no resolver sees): whether it may be reached.
/// Other hosts pass here and are checked by the resolver at connect time.
pub fn literal_allowed(url: &str, allow: &[String]) -> bool {
    let Ok((host, port)) = host_port(url) else { return false };
    match host.parse::<IpAddr>() {
        Ok(ip) => !is_forbidden(ip) || allowed(allow, &host, port),
        Err(_) => true,
    }
}

/// Resolves `host` and checks every address (any forbidden one refuses the endpoint, so DNS
/// answers cannot smuggle one in).
pub async fn resolve_checked(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, SsrfError> {
    let addrs: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|_| SsrfError::Unresolvable)?.collect();
    if addrs.is_empty() {
        return Err(SsrfError::Unresolvable);
    }
    if addrs.iter().any(|a| is_forbidden(a.ip())) {
        return Err(SsrfError::Forbidden);
    }
    Ok(addrs)
}

/// The save-time check of a user endpoint.
pub async fn check_endpoint(url: &str, allow: &[String]) -> Result<(), SsrfError> {
    let (host, port) = host_port(url)?;
    if allowed(allow, &host, port) {
        return Ok(());
    }
    resolve_checked(&host, port).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses_in_every_family() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "ff02::1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:ffff::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(is_forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in
            ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2001:4860::8888"]
        {
            assert!(!is_forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(host_port("https://api.example.com/v1"), Ok(("api.example.com".into(), 443)));
        assert_eq!(host_port("http://Example.com:8080"), Ok(("example.com".into(), 8080)));
        assert_eq!(host_port("http://[::1]:11434/v1"), Ok(("::1".into(), 11434)));
        assert_eq!(host_port("http://[::1]/v1"), Ok(("::1".into(), 80)));
        for bad in ["ftp://x/", "http://", "http://user:pw@host/", "http://host:99999/", "nourl", "http://[::1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn every_notation_of_loopback_is_refused() {
        for url in [
            "http://127.0.0.1:9/v1",
            "http://localhost:9/v1",
            "http://2130706433:9/v1",
            "http://0x7f000001:9/v1",
            "http://0177.0.0.1:9/v1",
            "http://127.1:9/v1",
            "http://[::1]:9/v1",
            "http://[::ffff:127.0.0.1]:9/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0:9/",
        ] {
            let r = check_endpoint(url, &[]).await;
            assert!(matches!(r, Err(SsrfError::Forbidden | SsrfError::Unresolvable)), "{url}: {r:?}");
        }
        assert_eq!(check_endpoint("http://127.0.0.1:9/v1", &["127.0.0.1:9".into()]).await, Ok(()));
        assert!(check_endpoint("http://127.0.0.1:10/v1", &["127.0.0.1:9".into()]).await.is_err());
    }
}
