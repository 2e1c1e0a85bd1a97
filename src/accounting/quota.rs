//! Quotas in USD: a token's lifetime quota and a tier's monthly quota per user (calendar month,
//! UTC). Spend lives in shared-state counters (micro-USD) so every node sees the same balance. A
//! request reserves its estimated cost before the upstream call — refused with 402 when the
//! reservation would pass the quota, or the quota is spent — and settles to its actual cost when
//! its record is written. The balance therefore never goes below minus one request's overshoot.
//!
//! Counters are rebuilt from the usage records when missing (a fresh Redis, a restarted embedded
//! node): a node checks each counter it uses against the database at most once a minute. When the
//! shared store is unreachable, a node spends only its share of what was left (the remaining
//! balance divided by the live nodes) on its own counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::accounting::Settle;
use crate::shared::{MemoryShared, SharedState, WindowCheck};
use crate::store::{self, Store};
use crate::types::now_ms;

/// Quota counters never roll over by time (2^40 ms is about 35 years); the month is in the key.
const QUOTA_WINDOW_MS: u64 = 1 << 40;
/// How long a node trusts that a counter exists before checking it against the database again.
const RECHECK_MS: i64 = 60_000;

/// Whose spend a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// A token, over its lifetime.
    Token(i64),
    /// A user, in the current calendar month (UTC).
    UserMonth(i64),
}

/// Why a reservation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum QuotaError {
    /// The quota is spent, or the estimate would pass it.
    Insufficient {
        /// Which quota.
        basis: Basis,
    },
    /// Neither the shared store nor the database can tell the balance.
    Unavailable,
}

/// The quota service of one node.
pub struct Quotas {
    store: Store,
    shared: Arc<dyn SharedState>,
    local: Arc<MemoryShared>,
    /// Counter key → (checked until, spend in the database when checked, micro-USD).
    known: Mutex<HashMap<String, (i64, u64)>>,
    /// One check at a time, so a burst of requests for a cold counter costs one database sum.
    checking: tokio::sync::Mutex<()>,
}

/// USD to whole micro-USD (negative and non-finite amounts count as zero).
pub fn micros(usd: f64) -> u64 {
    super::usd_to_micros(usd)
}

/// Micro-USD to USD.
pub fn to_usd(micros: u64) -> f64 {
    f64::from(u32::try_from(micros / 1_000_000).unwrap_or(u32::MAX))
        + f64::from(u32::try_from(micros % 1_000_000).unwrap_or(0)) / 1_000_000.0
}

fn month_start_ms(now_ms: i64) -> (i64, String) {
    use chrono::Datelike as _;
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let start = chrono::NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |d| d.and_utc().timestamp_millis());
    (start, format!("{:04}{:02}", now.year(), now.month()))
}

impl Quotas {
    /// Quotas over `shared`, rebuilt from `store`.
    pub fn new(store: Store, shared: Arc<dyn SharedState>) -> Self {
        Self {
            store,
            shared,
            local: Arc::new(MemoryShared::new()),
            known: Mutex::new(HashMap::new()),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    fn key(basis: Basis) -> (String, Option<i64>, Option<i64>, Option<i64>) {
        match basis {
            Basis::Token(id) => (format!("quota:tok:{id}"), Some(id), None, None),
            Basis::UserMonth(id) => {
                let (since, month) = month_start_ms(now_ms());
                (format!("quota:user:{id}:{month}"), None, Some(id), Some(since))
            }
        }
    }

    /// Makes sure the counter exists (rebuilt from the database if not); returns the key and the
    /// spend the database holds (micro-USD), when it could be read.
    async fn ensure(&self, basis: Basis) -> (String, Option<u64>) {
        let (key, token, user, since) = Self::key(basis);
        let fresh = |now: i64| {
            let known = self.known.lock().ok().and_then(|k| k.get(&key).copied());
            (known.filter(|(until, _)| *until > now).map(|(_, spent)| spent), known)
        };
        if let (Some(spent), _) = fresh(now_ms()) {
            return (key, Some(spent));
        }
        let _one_at_a_time = self.checking.lock().await;
        let now = now_ms();
        let (done, known) = fresh(now);
        if let Some(spent) = done {
            return (key, Some(spent));
        }
        // A marker set with the counter tells, in one cheap read, that it still exists (a Redis
        // that lost its data loses the marker too); only a missing counter costs a database sum.
        let marker = format!("{key}:init");
        if let Some((_, spent)) = known
            && matches!(self.shared.kv_get(&marker).await, Ok(Some(_)))
        {
            if let Ok(mut k) = self.known.lock() {
                k.insert(key.clone(), (now + RECHECK_MS, spent));
            }
            return (key, Some(spent));
        }
        let spent = match store::sum_cost(self.store.conn(), token, user, since).await {
            Ok(usd) => micros(usd),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read spend from the database; trusting the shared counter.");
                return (key, None);
            }
        };
        let init = self.shared.window_init(&key, QUOTA_WINDOW_MS, spent).await;
        let marked = match &init {
            Ok(_) => self.shared.kv_set(&marker, b"1", QUOTA_WINDOW_MS.saturating_mul(2)).await,
            Err(_) => Ok(()),
        };
        match init.and(marked) {
            Ok(()) => {
                if let Ok(mut k) = self.known.lock() {
                    k.insert(key.clone(), (now + RECHECK_MS, spent));
                }
            }
            Err(e) => tracing::debug!(error = %e, "Shared store unreachable while checking a quota counter."),
        }
        (key, Some(spent))
    }

    /// Reserves `estimate` micro-USD against each quota (USD) in `quotas`, all or none. The
    /// returned work settles the reservation to the actual cost; `None` when there is no quota.
    pub async fn reserve(
        &self,
        quotas: &[(Basis, f64)],
        estimate: u64,
        live_nodes: u64,
    ) -> Result<Option<Settle>, QuotaError> {
        if quotas.is_empty() {
            return Ok(None);
        }
        let amount = i64::try_from(estimate).unwrap_or(i64::MAX);
        let mut checks = Vec::with_capacity(quotas.len());
        let mut spent_in_db = Vec::with_capacity(quotas.len());
        for (basis, usd) in quotas {
            let (key, spent) = self.ensure(*basis).await;
            spent_in_db.push(spent);
            checks.push(WindowCheck { key, window_ms: QUOTA_WINDOW_MS, amount, limit: Some(micros(*usd)) });
        }
        let (backend, admission): (Arc<dyn SharedState>, _) = match self.shared.windows_add(&checks).await {
            Ok(a) => (Arc::clone(&self.shared), a),
            Err(e) => {
                tracing::warn!(error = %e, "Shared store unreachable; spending this node's share of the quotas.");
                let mut shares = Vec::with_capacity(checks.len());
                for (c, spent) in checks.iter().zip(&spent_in_db) {
                    let Some(spent) = spent else { return Err(QuotaError::Unavailable) };
                    let quota = c.limit.unwrap_or(0);
                    let share = spent.saturating_add(quota.saturating_sub(*spent) / live_nodes.max(1));
                    let _ = self.local.window_init(&c.key, QUOTA_WINDOW_MS, *spent).await;
                    shares.push(WindowCheck { limit: Some(share), ..c.clone() });
                }
                let local: Arc<dyn SharedState> = self.local.clone();
                let a = local.windows_add(&shares).await.map_err(|_| QuotaError::Unavailable)?;
                (local, a)
            }
        };
        if !admission.allowed {
            // All or none: the message names the narrowest quota (the token's, when there is one).
            let basis = quotas.first().map_or(Basis::Token(0), |(b, _)| *b);
            return Err(QuotaError::Insufficient { basis });
        }
        let keys: Vec<String> = checks.into_iter().map(|c| c.key).collect();
        Ok(Some(Box::new(move |row| {
            let actual = i64::try_from(micros(row.cost_usd)).unwrap_or(i64::MAX);
            let delta = actual.saturating_sub(amount);
            if delta == 0 {
                return;
            }
            let fix: Vec<WindowCheck> = keys
                .iter()
                .map(|k| WindowCheck { key: k.clone(), window_ms: QUOTA_WINDOW_MS, amount: delta, limit: None })
                .collect();
            drop(tokio::spawn(async move {
                if let Err(e) = backend.windows_add(&fix).await {
                    tracing::warn!(error = %e, "Could not settle a quota reservation.");
                }
            }));
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_starts_at_midnight_utc_on_the_first() {
        // 2026-11-22T03:00:00Z
        let (start, month) = month_start_ms(1_795_316_400_000);
        assert_eq!(month, "202611");
        assert_eq!(chrono::DateTime::from_timestamp_millis(start).unwrap().to_rfc3339(), "2026-11-01T00:00:00+00:00");
    }
}
