//! The per-client gate: at most `server.max_requests_per_client` requests from one client
//! address (the trusted proxy's `X-Forwarded-For` hop, else the peer; an IPv6 client by its /64)
//! between their head and the start of their answer — reading bodies, admission, waiting for the
//! upstream. A client that opens more — slow bodies, or a flood — gets 429 at once for the rest,
//! so it cannot hold the node's connections and file descriptors for everyone else. Streams
//! being relayed are not counted here: a user's are bounded by the tier's concurrency, and
//! connections by nginx's `limit_conn`, the front line (this gate holds when a node is reached
//! directly).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Requests in flight per client address.
#[derive(Debug, Default)]
pub struct ClientGate {
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One request in flight from an address; leaves the gate when dropped.
#[derive(Debug)]
pub struct Inside {
    gate: Arc<ClientGate>,
    ip: IpAddr,
}

impl Drop for Inside {
    fn drop(&mut self) {
        if let Ok(mut c) = self.gate.counts.lock()
            && let Some(n) = c.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

impl ClientGate {
    /// A gate of `max` requests per address (0: no cap).
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self { max, counts: Mutex::new(HashMap::new()) })
    }

    /// Lets one more request from `ip` in, or `None` when it has `max` in flight already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Inside> {
        if self.max == 0 {
            return Some(Inside { gate: Arc::clone(self), ip });
        }
        let mut c = self.counts.lock().ok()?;
        let n = c.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(c);
        Some(Inside { gate: Arc::clone(self), ip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_per_address() {
        let gate = ClientGate::new(2);
        let (a, b): (IpAddr, IpAddr) = ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap());
        let one = gate.enter(a).unwrap();
        let two = gate.enter(a).unwrap();
        assert!(gate.enter(a).is_none());
        assert!(gate.enter(b).is_some());
        drop(one);
        let three = gate.enter(a).unwrap();
        drop((two, three));
        assert!(gate.counts.lock().unwrap().is_empty());
    }
}
