//! Response-cache purges as catalog state: a purge is a stored mark (`meta` rows named
//! `cache_purge:…`, valued with the purge's time), carried to every node with the catalog
//! version that holds it. A cached answer written at or before the mark that covers it is not
//! served, whichever node or process wrote it — so a purge made from the CLI reaches an
//! embedded node's in-process cache too.

use std::collections::HashMap;

pub use crate::shared::cache::{PurgeScope, route_tag};

/// The prefix of every purge mark's name.
pub const PREFIX: &str = "cache_purge:";

/// The name of a purge's mark.
pub fn mark_name(scope: PurgeScope) -> String {
    match scope {
        PurgeScope::All => format!("{PREFIX}all"),
        PurgeScope::User(u) => format!("{PREFIX}u:{u}"),
        PurgeScope::Route(r) => format!("{PREFIX}r:{r:016x}"),
        PurgeScope::UserRoute(u, r) => format!("{PREFIX}ur:{u}:{r:016x}"),
    }
}

/// The purge a mark's name stands for.
pub fn parse_mark(name: &str) -> Option<PurgeScope> {
    let rest = name.strip_prefix(PREFIX)?;
    if rest == "all" {
        return Some(PurgeScope::All);
    }
    let tag = |s: &str| u64::from_str_radix(s, 16).ok().filter(|_| s.len() == 16);
    if let Some(u) = rest.strip_prefix("u:") {
        return u.parse().ok().map(PurgeScope::User);
    }
    if let Some(r) = rest.strip_prefix("r:") {
        return tag(r).map(PurgeScope::Route);
    }
    let (u, r) = rest.strip_prefix("ur:")?.split_once(':')?;
    Some(PurgeScope::UserRoute(u.parse().ok()?, tag(r)?))
}

/// The purge marks in force: the time (ms since the epoch) of the latest purge of each scope.
#[derive(Clone, Debug, Default)]
pub struct CachePurges {
    marks: HashMap<PurgeScope, i64>,
    all: i64,
}

impl CachePurges {
    /// From the stored marks (name, time); names that do not parse are ignored.
    pub fn from_marks(rows: impl IntoIterator<Item = (String, i64)>) -> Self {
        let mut marks = HashMap::new();
        for (name, at) in rows {
            if let Some(scope) = parse_mark(&name) {
                marks.insert(scope, at);
            }
        }
        let all = marks.get(&PurgeScope::All).copied().unwrap_or(0);
        Self { marks, all }
    }

    /// The time of the latest purge covering an entry of `owner` and route `tag` (0: none).
    pub fn purged_at(&self, owner: Option<i64>, tag: u64) -> i64 {
        if self.marks.len() <= usize::from(self.all > 0) {
            return self.all;
        }
        let mut at = self.all;
        let mut look = |s: PurgeScope| {
            if let Some(t) = self.marks.get(&s) {
                at = at.max(*t);
            }
        };
        look(PurgeScope::Route(tag));
        if let Some(u) = owner {
            look(PurgeScope::User(u));
            look(PurgeScope::UserRoute(u, tag));
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_cover_what_they_name() {
        let tag = route_tag("rotation/coding");
        for s in [PurgeScope::All, PurgeScope::User(7), PurgeScope::Route(tag), PurgeScope::UserRoute(7, tag)] {
            assert_eq!(parse_mark(&mark_name(s)), Some(s));
            assert!(mark_name(s).len() <= 64);
        }
        assert_eq!(parse_mark("cache_purge:r:12"), None);
        assert_eq!(parse_mark("catalog_version"), None);
        let p = CachePurges::from_marks([
            (mark_name(PurgeScope::User(7)), 100),
            (mark_name(PurgeScope::Route(tag)), 200),
            (mark_name(PurgeScope::UserRoute(8, tag)), 300),
        ]);
        assert_eq!(p.purged_at(Some(7), 1), 100);
        assert_eq!(p.purged_at(Some(7), tag), 200);
        assert_eq!(p.purged_at(Some(8), tag), 300);
        assert_eq!(p.purged_at(None, tag), 200, "a global route's entries have no tenant");
        assert_eq!(p.purged_at(None, 1), 0);
        let all = CachePurges::from_marks([(mark_name(PurgeScope::All), 50)]);
        assert_eq!(all.purged_at(Some(1), 2), 50);
    }
}
