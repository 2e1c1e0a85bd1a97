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

    /// The last announced catalog version.
    pub fn catalog_version(&self) -> String {
        format!("{}catalog:version", self.prefix)
    }

    /// The channel of catalog announcements.
    pub fn catalog_channel(&self) -> String {
        format!("{}catalog:changed", self.prefix)
    }
}
