//! Single flight: identical requests that miss at the same time on one node make one upstream
//! call. The first becomes the leader; the others wait — as futures, holding no thread — until
//! the leader's answer is stored or the leader gives up, then read the cache again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::shared::cache::CacheKey;

/// The flights in progress on this node.
#[derive(Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>,
}

/// What joining a flight made of a request.
pub enum Joined {
    /// It calls the upstream; the others wait until this is dropped.
    Leader(Leader),
    /// Another request is calling it: wait on this, then read the cache again.
    Follower(watch::Receiver<()>),
}

/// The leader's hold on its flight; dropping it (after the answer is stored, or when the request
/// ends without one) wakes the followers.
pub struct Leader {
    map: Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>,
    key: CacheKey,
    mine: watch::Receiver<()>,
    _wake: watch::Sender<()>,
}

impl Flights {
    /// Joins the flight of `key`, leading it when there is none.
    pub fn join(&self, key: CacheKey) -> Joined {
        let Ok(mut map) = self.map.lock() else {
            // A poisoned map: no coalescing, every request leads its own call.
            let (tx, rx) = watch::channel(());
            return Joined::Leader(Leader { map: Arc::clone(&self.map), key, mine: rx, _wake: tx });
        };
        if let Some(rx) = map.get(&key) {
            return Joined::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        map.insert(key, rx.clone());
        Joined::Leader(Leader { map: Arc::clone(&self.map), key, mine: rx, _wake: tx })
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// Whether none is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock()
            && map.get(&self.key).is_some_and(|rx| rx.same_channel(&self.mine))
        {
            map.remove(&self.key);
        }
        // The sender drops after this: every follower's `changed()` returns.
    }
}

/// Waits until the flight a follower joined ends.
pub async fn landed(mut rx: watch::Receiver<()>) {
    // Nothing is ever sent: `changed` returns when the leader's sender is dropped.
    while rx.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leads_the_others_wait_until_it_lands() {
        let flights = Flights::default();
        let key = CacheKey { owner: Some(1), route: 2, digest: [3; 32] };
        let Joined::Leader(leader) = flights.join(key) else { panic!("the first leads") };
        let waiters: Vec<_> = (0..5)
            .map(|_| match flights.join(key) {
                Joined::Follower(rx) => tokio::spawn(landed(rx)),
                Joined::Leader(_) => panic!("one leader at a time"),
            })
            .collect();
        let other = CacheKey { digest: [4; 32], ..key };
        assert!(matches!(flights.join(other), Joined::Leader(_)), "another key has its own flight");
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        drop(leader);
        for w in waiters {
            w.await.unwrap();
        }
        assert!(flights.is_empty());
        assert!(matches!(flights.join(key), Joined::Leader(_)), "a landed flight can be led again");
    }
}
