//! Why a target took a request (`X-Switchyard-Reason`, the receipt's `reason`), and why a
//! candidate was left out (the receipt's `filtered`).

use crate::catalog::Strategy;
use crate::proxy::autoselect::SelectionReason;
use crate::proxy::burst::BurstReason;

/// Why a target took a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The plan's strategy put it first (`direct`, `weighted`, `priority`, `least_busy`).
    Strategy(Strategy),
    /// An earlier candidate failed.
    Failover,
    /// Every candidate was cooling down; this one was probed.
    CooldownProbe,
    /// It was cooling down, but the ejection cap kept it serving.
    EjectionCap,
    /// An autoselect chose it.
    Selection(SelectionReason),
    /// A burst rotation's decision.
    Burst(BurstReason),
    /// The response cache held the answer (no target took the request).
    Cache,
}

impl Reason {
    /// The name in headers and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strategy(s) => s.reason(),
            Self::Failover => "failover_after_error",
            Self::CooldownProbe => "cooldown_probe",
            Self::EjectionCap => "ejection_cap",
            Self::Selection(r) => r.as_str(),
            Self::Burst(r) => r.as_str(),
            Self::Cache => "cache_hit",
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a candidate was left out before any attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// The prompt does not fit its context window.
    Context,
    /// It is cooling down after errors.
    Cooldown,
    /// Its provider is at its concurrency limit.
    OverCapacity,
    /// A private request may not go there.
    Privacy,
    /// Today's cloud budget is spent.
    Budget,
    /// The request holds what only its own dialect's upstreams can carry, and this one speaks
    /// another.
    Dialect,
}

impl Filter {
    /// The name in receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Context => "context",
            Self::Cooldown => "cooldown",
            Self::OverCapacity => "over_capacity",
            Self::Privacy => "privacy",
            Self::Budget => "budget",
            Self::Dialect => "dialect",
        }
    }
}

impl serde::Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
