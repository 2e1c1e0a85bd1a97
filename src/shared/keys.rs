//! Every Redis key and channel name. Callers pass logical keys (`rl:token:7`); this module
//! prefixes them per deployment and per kind.

/// Key names of one deployment.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (e.g. `sy:`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// A windowed counter.
    pub fn window(&self, key: &str) -> String {
        format!("{}w:{key}", self.prefix)
    }

    /// A set of concurrency slots.
    pub fn slots(&self, key: &str) -> String {
        format!("{}s:{key}", self.prefix)
    }

    /// A cooldown deadline.
    pub fn cooldown(&self, key: &str) -> String {
        format!("{}c:{key}", self.prefix)
    }

    /// A consecutive-failure counter.
    pub fn streak(&self, key: &str) -> String {
        format!("{}streak:{key}", self.prefix)
    }

    /// The usage ledger's stream.
    pub fn ledger_stream(&self) -> String {
        format!("{}ledger:stream", self.prefix)
    }

    /// A node's "started" records.
    pub fn ledger_started(&self, node: &str) -> String {
        format!("{}ledger:started:{node}", self.prefix)
    }

    /// The nodes that have "started" records.
    pub fn ledger_nodes(&self) -> String {
        format!("{}ledger:nodes", self.prefix)
    }

    /// A key/value entry.
    pub fn kv(&self, key: &str) -> String {
        format!("{}kv:{key}", self.prefix)
    }

    /// A cached answer: `rc:<owner>:<route tag>:<digest>`, owner `u<id>` or `g` (a global
    /// route's), so a purge finds a tenant's or a route's entries by pattern.
    pub fn cache(&self, key: &crate::shared::cache::CacheKey) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(self.prefix.len() + 112);
        let _ = write!(s, "{}rc:", self.prefix);
        match key.owner {
            Some(u) => {
                let _ = write!(s, "u{u}");
            }
            None => s.push('g'),
        }
        let _ = write!(s, ":{:016x}:", key.route);
        for b in key.digest {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// The `SCAN MATCH` pattern of the cached answers a purge covers.
    pub fn cache_pattern(&self, scope: crate::shared::cache::PurgeScope) -> String {
        use crate::shared::cache::PurgeScope;
        let prefix = glob_escape(&self.prefix);
        match scope {
            PurgeScope::All => format!("{prefix}rc:*"),
            PurgeScope::User(u) => format!("{prefix}rc:u{u}:*"),
            PurgeScope::Route(r) => format!("{prefix}rc:*:{r:016x}:*"),
            PurgeScope::UserRoute(u, r) => format!("{prefix}rc:u{u}:{r:016x}:*"),
        }
    }

    /// The last announced catalog version.
    pub fn catalog_version(&self) -> String {
        format!("{}catalog:version", self.prefix)
    }

    /// The channel of catalog announcements.
    pub fn catalog_channel(&self) -> String {
        format!("{}catalog:changed", self.prefix)
    }
}

/// `s` with Redis glob characters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
