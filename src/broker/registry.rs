//! The workers connected to this node, by broker provider: who serves what, how busy each is,
//! and which one takes the next request (facts gathered here, the choice made by the pure
//! [`choose`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::broker::frame::Registration;
use crate::broker::session::Session;

/// One connected worker.
pub struct Connected {
    /// Its id (unique per connection).
    pub id: String,
    /// The provider's key: a configured provider's id, or `<user>/<name>` for a user's own.
    pub provider: String,
    /// What it registered.
    pub registration: Registration,
    /// Its streams.
    pub session: Session,
    /// When it connected (ms since the epoch).
    pub connected_at: i64,
    last_seen: AtomicI64,
}

impl Connected {
    /// Records a sign of life (a heartbeat or any frame).
    pub fn seen(&self, at_ms: i64) {
        self.last_seen.store(at_ms, Ordering::Relaxed);
    }

    /// Its last sign of life (ms since the epoch).
    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }
}

/// What the admin listing shows of a worker.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerInfo {
    /// Its id.
    pub id: String,
    /// The provider it serves.
    pub provider: String,
    /// Its models.
    pub models: Vec<String>,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its build.
    pub version: String,
    /// Requests in flight on it.
    pub in_flight: usize,
    /// The most it takes.
    pub max_concurrency: u32,
    /// Its last sign of life (ms since the epoch).
    pub last_seen: i64,
}

/// The workers of this node.
#[derive(Default)]
pub struct Registry {
    workers: Mutex<HashMap<String, Vec<Arc<Connected>>>>,
}

/// What the choice of a worker reads of each candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// It serves the requested model.
    pub serves: bool,
    /// Requests in flight on it.
    pub in_flight: usize,
    /// The most it takes.
    pub max: usize,
}

/// The worker to take a request: among those serving the model with room, the one with the
/// most room (the first of equals); `None` when none has room.
pub fn choose(candidates: &[Facts]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, f)| f.serves && f.in_flight < f.max)
        .max_by(|(i, a), (j, b)| (a.max - a.in_flight).cmp(&(b.max - b.in_flight)).then(j.cmp(i)))
        .map(|(i, _)| i)
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Connected>>>> {
        self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a worker that registered for `provider`.
    pub fn add(&self, provider: &str, registration: Registration, session: Session, now_ms: i64) -> Arc<Connected> {
        let worker = Arc::new(Connected {
            id: uuid::Uuid::now_v7().to_string(),
            provider: provider.to_owned(),
            registration,
            session,
            connected_at: now_ms,
            last_seen: AtomicI64::new(now_ms),
        });
        self.lock().entry(provider.to_owned()).or_default().push(Arc::clone(&worker));
        worker
    }

    /// Removes a worker (its connection ended); its streams end with it.
    pub fn remove(&self, id: &str) {
        let mut workers = self.lock();
        for list in workers.values_mut() {
            if let Some(at) = list.iter().position(|w| w.id == id) {
                list.remove(at).session.close();
            }
        }
        workers.retain(|_, list| !list.is_empty());
    }

    /// The session of the worker of `provider` that takes a request for `model`, if one has room.
    pub fn pick(&self, provider: &str, model: &str) -> Option<Session> {
        let workers = self.lock();
        let list = workers.get(provider)?;
        let facts: Vec<Facts> = list
            .iter()
            .map(|w| Facts {
                serves: w.registration.models.iter().any(|m| m == model),
                in_flight: w.session.in_flight(),
                max: usize::try_from(w.registration.max_concurrency).unwrap_or(usize::MAX),
            })
            .collect();
        choose(&facts).map(|i| list[i].session.clone())
    }

    /// Every worker, for the admin listing.
    pub fn list(&self) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .lock()
            .values()
            .flatten()
            .map(|w| WorkerInfo {
                id: w.id.clone(),
                provider: w.provider.clone(),
                models: w.registration.models.clone(),
                labels: w.registration.labels.clone(),
                version: w.registration.version.clone(),
                in_flight: w.session.in_flight(),
                max_concurrency: w.registration.max_concurrency,
                last_seen: w.last_seen(),
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, &a.id).cmp(&(&b.provider, &b.id)));
        out
    }

    /// The workers whose last sign of life is older than `before_ms`: removed, and returned.
    pub fn expire(&self, before_ms: i64) -> Vec<Arc<Connected>> {
        let mut stale = Vec::new();
        let mut workers = self.lock();
        for list in workers.values_mut() {
            let (gone, live): (Vec<_>, Vec<_>) = list.drain(..).partition(|w| w.last_seen() < before_ms);
            *list = live;
            stale.extend(gone);
        }
        workers.retain(|_, list| !list.is_empty());
        drop(workers);
        for w in &stale {
            w.session.close();
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::frame::RequestHead;
    use crate::broker::session::OpenError;

    fn facts(serves: bool, in_flight: usize, max: usize) -> Facts {
        Facts { serves, in_flight, max }
    }

    #[test]
    fn the_worker_with_the_most_room_that_serves_the_model_takes_it() {
        assert_eq!(choose(&[]), None);
        assert_eq!(
            choose(&[facts(true, 1, 4), facts(true, 0, 4), facts(true, 0, 4)]),
            Some(1),
            "most room, first of equals"
        );
        assert_eq!(choose(&[facts(false, 0, 8), facts(true, 3, 4)]), Some(1), "only workers serving the model");
        assert_eq!(choose(&[facts(true, 4, 4), facts(true, 2, 2)]), None, "none with room");
    }

    fn registration(models: &[&str], max: u32) -> Registration {
        Registration {
            provider: "gpu".into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            max_concurrency: max,
            version: "0.1.0".into(),
            labels: vec![],
        }
    }

    #[tokio::test]
    async fn workers_are_picked_listed_and_expire() {
        let r = Registry::default();
        let (out, _rx) = tokio::sync::mpsc::channel(16);
        let a = r.add("gpu", registration(&["m"], 1), Session::new(1, out.clone()), 1_000);
        let b = r.add("gpu", registration(&["m", "n"], 2), Session::new(2, out), 1_000);
        assert!(r.pick("cpu", "m").is_none(), "no worker of that provider");
        let head = || RequestHead { path: "/chat/completions".into(), headers: vec![], stream: false };
        let s = r.pick("gpu", "n").expect("b serves n");
        let _one = s.open(head(), bytes::Bytes::new()).await.unwrap();
        assert_eq!(b.session.in_flight(), 1);
        // a has room 1, b has room 1 now: the first of equals.
        let s = r.pick("gpu", "m").expect("a worker for m");
        let _two = s.open(head(), bytes::Bytes::new()).await.unwrap();
        assert_eq!(a.session.in_flight(), 1);
        let _three = r.pick("gpu", "m").expect("b has room").open(head(), bytes::Bytes::new()).await.unwrap();
        assert!(r.pick("gpu", "m").is_none(), "everyone is full");
        assert_eq!(r.list().len(), 2);
        b.seen(5_000);
        let gone = r.expire(2_000);
        assert_eq!(gone.iter().map(|w| w.id.clone()).collect::<Vec<_>>(), vec![a.id.clone()]);
        assert_eq!(
            a.session.open(head(), bytes::Bytes::new()).await.err(),
            Some(OpenError::Gone),
            "an expired worker's session is closed"
        );
        assert_eq!(r.list().iter().map(|w| w.id.clone()).collect::<Vec<_>>(), vec![b.id.clone()]);
        r.remove(&b.id);
        assert!(r.list().is_empty());
    }
}
