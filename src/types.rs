//! Vocabulary shared by every layer: ids, route references, usage figures.
//!
//! Architecture Invariant: this module depends on `std` and `serde` only.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Words that `/api/{provider_id}/…` routes use and therefore cannot be provider ids.
pub const RESERVED_PROVIDER_IDS: &[&str] = &["rotations", "autoselect", "user", "u", "v1", "me", "broker"];

/// A request id: UUIDv7, generated at the edge, forwarded upstream and stored on the usage row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an upstream runs; privacy and burst routing use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Locality {
    /// On hardware the operator controls.
    Local,
    /// A hosted service.
    #[default]
    Cloud,
}

/// The wire dialect of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible server.
    Openai,
    /// Azure OpenAI.
    Azure,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// Workers that dialled in over a websocket.
    Broker,
    /// Answers in process, for demos and load tests.
    Mock,
}

impl ProviderKind {
    /// The snake_case name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Broker => "broker",
            Self::Mock => "mock",
        }
    }

    /// Whether requests reach providers of this kind at an `endpoint` (a broker provider's
    /// workers dial in; the mock answers in process).
    pub fn has_endpoint(self) -> bool {
        !matches!(self, Self::Broker | Self::Mock)
    }
}

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May act on every namespace and the control plane.
    Admin,
    /// May act on its own namespace.
    User,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }

    /// Parses a stored or typed role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            _ => None,
        }
    }
}

/// The three OpenAI-compatible operations the data plane proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `POST …/chat/completions`.
    Chat,
    /// `POST …/completions`.
    Completions,
    /// `POST …/embeddings`.
    Embeddings,
}

impl Operation {
    /// The path suffix appended to an OpenAI-compatible base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }
}

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache (part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache (part of `prompt_tokens`; Anthropic
    /// prices them apart).
    pub cache_write_tokens: u64,
}

/// A parsed `model` string (SPEC §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteRef {
    /// `provider/<id>/<model>`.
    Provider { provider: String, model: String },
    /// `rotation/<name>`.
    Rotation(String),
    /// `autoselect/<name>`.
    Autoselect(String),
    /// `user-provider/<id>/<model>`.
    UserProvider { provider: String, model: String },
    /// `user-rotation/<name>`.
    UserRotation(String),
    /// `user-autoselect/<name>`.
    UserAutoselect(String),
    /// Anything else: resolved among the namespace's names.
    Bare(String),
}

impl RouteRef {
    /// Splits a `model` string into its kind and parts. Never fails: unknown shapes are bare names.
    pub fn parse(s: &str) -> Self {
        let two = |rest: &str| rest.split_once('/').map(|(a, b)| (a.to_owned(), b.to_owned()));
        if let Some(rest) = s.strip_prefix("provider/") {
            if let Some((provider, model)) = two(rest) {
                return Self::Provider { provider, model };
            }
        } else if let Some(rest) = s.strip_prefix("user-provider/") {
            if let Some((provider, model)) = two(rest) {
                return Self::UserProvider { provider, model };
            }
        } else if let Some(rest) = s.strip_prefix("rotation/") {
            return Self::Rotation(rest.to_owned());
        } else if let Some(rest) = s.strip_prefix("autoselect/") {
            return Self::Autoselect(rest.to_owned());
        } else if let Some(rest) = s.strip_prefix("user-rotation/") {
            return Self::UserRotation(rest.to_owned());
        } else if let Some(rest) = s.strip_prefix("user-autoselect/") {
            return Self::UserAutoselect(rest.to_owned());
        }
        Self::Bare(s.to_owned())
    }
}

/// `[a-z0-9][a-z0-9_-]{0,62}`: the shape of a provider id.
pub fn is_valid_provider_id(s: &str) -> bool {
    is_name(s, b"_-") && !RESERVED_PROVIDER_IDS.contains(&s)
}

/// `[a-z0-9][a-z0-9_.-]{0,62}`: the canonical shape of a username. Anything else is refused, so
/// two spellings can never name one user.
pub fn is_valid_username(s: &str) -> bool {
    is_name(s, b"_.-")
}

fn is_name(s: &str, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
}

/// Matches `name` against a glob where `*` is any run of characters and `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some(pi);
                mark = ni;
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ni = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The client address of a request (see [`client_ip`]), computed once by the server's
/// middleware and kept in the request's extensions for whoever limits by client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The client of a request, as the per-client limits key it: `peer`, or — when the peer is one
/// of `trusted` proxies — the last hop of `X-Forwarded-For` (the address the proxy saw), else
/// `X-Real-IP`. Addresses are canonical (`::ffff:a.b.c.d` is `a.b.c.d`), and an IPv6 client is
/// its /64 (one host normally holds a whole /64, and could rotate addresses within it).
pub fn client_ip(
    peer: Option<std::net::IpAddr>,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let peer = peer?.to_canonical();
    let parse = |s: &str| s.trim().parse::<std::net::IpAddr>().ok().map(|ip| ip.to_canonical());
    let client = if trusted.iter().any(|t| t.to_canonical() == peer) {
        forwarded_for
            .and_then(|f| f.rsplit(',').next())
            .and_then(parse)
            .or_else(|| real_ip.and_then(parse))
            .unwrap_or(peer)
    } else {
        peer
    };
    Some(match client {
        std::net::IpAddr::V6(v6) => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX)))
        }
        v4 => v4,
    })
}

/// Whether every name `inner` matches is also matched by `outer` (both globs of `*` and `?`).
///
/// Decided by matching `outer` against `inner`'s symbols: a `*` of `outer` takes any run of
/// `inner`'s symbols, a `?` one literal or `?`, a literal only the same literal. That is sound
/// (a `true` is always right) and refuses the rare equal-but-differently-written pairs such as
/// `*?` within `?*`, which is the safe side for scopes. Patterns longer than 512 characters are
/// never within anything.
pub fn glob_within(inner: &str, outer: &str) -> bool {
    let (o, i): (Vec<char>, Vec<char>) = (outer.chars().collect(), inner.chars().collect());
    if o.len() > 512 || i.len() > 512 {
        return false;
    }
    // reach[j]: `outer[..k]` can match `inner[..j]`, for the current k.
    let mut reach = vec![false; i.len() + 1];
    reach[0] = true;
    for oc in &o {
        let mut next = vec![false; i.len() + 1];
        match oc {
            '*' => {
                let mut any = false;
                for j in 0..=i.len() {
                    any |= reach[j];
                    next[j] = any;
                }
            }
            '?' => {
                for j in 0..i.len() {
                    next[j + 1] = reach[j] && i[j] != '*';
                }
            }
            c => {
                for j in 0..i.len() {
                    next[j + 1] = reach[j] && i[j] == *c;
                }
            }
        }
        reach = next;
    }
    reach[i.len()]
}

/// Whether `s` has the shape of a Switchyard token: `sy-` and at least 43 URL-safe characters.
pub fn is_well_formed_token(s: &str) -> bool {
    s.strip_prefix("sy-").is_some_and(|rest| {
        (43..=128).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Milliseconds since the Unix epoch, the time unit of every stored instant.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A node's graceful shutdown, as request handlers see it: `draining` once the stop signal came
/// (readiness turns 503, so balancers and Kubernetes stop sending), `cut` when the shutdown
/// deadline is near (streams still open end with an error event and a partial usage record,
/// never a silent cut).
#[derive(Clone, Debug, Default)]
pub struct Drain {
    /// Set when the stop signal arrives.
    pub draining: tokio_util::sync::CancellationToken,
    /// Set just before `server.shutdown_timeout_secs` runs out.
    pub cut: tokio_util::sync::CancellationToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_refs_parse() {
        assert_eq!(
            RouteRef::parse("provider/local/qwen/2.5"),
            RouteRef::Provider { provider: "local".into(), model: "qwen/2.5".into() }
        );
        assert_eq!(RouteRef::parse("rotation/coding"), RouteRef::Rotation("coding".into()));
        assert_eq!(RouteRef::parse("provider/x"), RouteRef::Bare("provider/x".into()));
        assert_eq!(RouteRef::parse("gpt-4"), RouteRef::Bare("gpt-4".into()));
    }

    #[test]
    fn names() {
        assert!(is_valid_username("alice.b-1_"));
        for bad in ["", "..", "Alice", ".a", "a/b", "a%2e", "ａlice", "a b", &"a".repeat(64)] {
            assert!(!is_valid_username(bad), "{bad}");
        }
        assert!(is_valid_provider_id("local-gpu"));
        assert!(!is_valid_provider_id("v1"));
        assert!(!is_valid_provider_id("a.b"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("provider/*", "provider/a/b"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("provider/a/*", "provider/b/x"));
        assert!(glob_match("*/m*", "provider/x/model"));
    }

    #[test]
    fn client_addresses() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = [lo];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
        // A direct client's headers are ignored; a trusted proxy's last hop counts.
        assert_eq!(client_ip(ip("203.0.113.9"), Some("198.51.100.1"), None, &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(Some(lo), Some("10.0.0.1, 198.51.100.1"), None, &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(Some(lo), None, Some("198.51.100.2"), &trusted), ip("198.51.100.2"));
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), Some("198.51.100.1"), None, &trusted), ip("198.51.100.1"));
        // IPv6 clients by /64.
        assert_eq!(client_ip(ip("2001:db8:1:2:aaaa::1"), None, None, &trusted), ip("2001:db8:1:2::"));
        assert_eq!(client_ip(Some(lo), Some("garbage"), None, &trusted), Some(lo));
    }

    /// A child scope is checked by matching, not by comparing glob text: `provider/*/*` is not
    /// within `provider/?/*`; and whenever `glob_within` says yes, every name the inner glob
    /// matches is matched by the outer one (all names up to 5 characters over a small alphabet,
    /// 3,000 generated pairs).
    #[test]
    fn glob_within_is_sound() {
        assert!(glob_within("provider/x/*", "provider/*/*"));
        assert!(glob_within("provider/x/m", "provider/?/*"));
        assert!(!glob_within("provider/*/*", "provider/?/*"));
        assert!(!glob_within("*", "provider/*"));
        assert!(glob_within("provider/*", "*"));
        assert!(!glob_within("provider/?", "provider/x"));
        let alphabet = ['a', 'b', '/'];
        let mut names = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for n in &frontier {
                for c in alphabet {
                    next.push(format!("{n}{c}"));
                }
            }
            names.extend(next.iter().cloned());
            frontier = next;
        }
        let symbols = ['a', 'b', '/', '*', '?'];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut pattern = |len: usize| -> String {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    symbols[usize::try_from(x % 5).unwrap_or(0)]
                })
                .collect()
        };
        let mut proved = 0;
        for k in 0..3_000 {
            let (inner, outer) = (pattern(1 + k % 4), pattern(1 + (k / 4) % 4));
            if glob_within(&inner, &outer) {
                proved += 1;
                for n in names.iter().filter(|n| glob_match(&inner, n)) {
                    assert!(glob_match(&outer, n), "{inner} within {outer}, but {n} escapes");
                }
            }
        }
        assert!(proved > 100, "only {proved} pairs were within");
    }
}
