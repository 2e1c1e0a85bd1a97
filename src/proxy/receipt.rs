//! The routing receipt stored on a usage record: candidates considered, what filtered each, the
//! attempts and their failures, the chosen target and the reason.

use crate::catalog::Plan;
use crate::proxy::reason::{Filter, Reason};

/// The routing receipt stored on a rotation's usage record.
#[derive(Debug, serde::Serialize)]
pub struct Receipt {
    route: String,
    strategy: &'static str,
    candidates: Vec<ReceiptEntry>,
    chosen: Option<String>,
    reason: Option<Reason>,
    /// An autoselect's choice: candidates considered, filters, scores, outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<serde_json::Value>,
    /// A failover was skipped because the node's retry budget was spent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry_budget_exhausted: bool,
}

#[derive(Debug, serde::Serialize)]
struct ReceiptEntry {
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    filtered: Option<Filter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'static str>,
}

impl Receipt {
    /// A receipt listing every candidate of `plan`.
    pub fn new(plan: &Plan) -> Self {
        Self {
            route: plan.route.clone(),
            strategy: plan.strategy.reason(),
            candidates: plan
                .candidates
                .iter()
                .map(|c| ReceiptEntry { target: c.target.route.clone(), filtered: None, attempt: None, failure: None })
                .collect(),
            chosen: None,
            reason: None,
            selection: None,
            retry_budget_exhausted: false,
        }
    }

    fn entry(&mut self, target: &str) -> Option<&mut ReceiptEntry> {
        self.candidates.iter_mut().find(|e| e.target == target && e.attempt.is_none() && e.filtered.is_none())
    }

    /// A candidate was removed before any attempt.
    pub fn filtered(&mut self, target: &str, why: Filter) {
        if let Some(e) = self.entry(target) {
            e.filtered = Some(why);
        }
    }

    /// Attempt `n` (from 1) goes to `target` for `reason`.
    pub fn attempt(&mut self, target: &str, n: usize, reason: Reason) {
        if let Some(e) = self.entry(target) {
            e.attempt = Some(n);
        }
        self.chosen = Some(target.to_owned());
        self.reason = Some(reason);
    }

    /// The attempt at `target` failed with `kind`.
    pub fn failed(&mut self, target: &str, kind: &'static str) {
        if let Some(e) = self.candidates.iter_mut().rev().find(|e| e.target == target && e.attempt.is_some()) {
            e.failure = Some(kind);
        }
        self.chosen = None;
        self.reason = None;
    }

    /// `target=why` for every candidate filtered out, comma-separated (for the routing span).
    pub fn filtered_summary(&self) -> String {
        let parts: Vec<String> =
            self.candidates.iter().filter_map(|e| e.filtered.map(|f| format!("{}={}", e.target, f.as_str()))).collect();
        parts.join(",")
    }

    /// The receipt as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
