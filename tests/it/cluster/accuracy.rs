//! Limits and quotas across three nodes: F12 (rate-limit accuracy) and F13 (the quota race, on
//! Postgres and on MariaDB).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::types::now_ms;

use super::load::{self, Outcome};
use super::{Cluster, Options, provider_toml, serial, soak};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{fresh_database, service_url};

/// F12 (CI form: one whole minute window; soak: five): a user with 600 requests/min and
/// 200 k tokens/min sends twice that through nginx, round-robin over the three nodes; another,
/// with 10 k tokens/min, twice its token limit.
#[actix_web::test]
async fn f12_admitted_requests_stay_within_two_percent_of_the_limit_across_nodes() {
    let _serial = serial().await;
    let mock = MockUpstream::start(2);
    mock.stop_recording();
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let cluster = Cluster::start(Options::new(db, provider_toml("mock", &mock.base(), &["m"], ""))).await;
    let r = cluster.admin("PUT", "/tiers/f12", &json!({"rpm": 600, "tpm": 200_000})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (token, _) = cluster.user("f12", Some("f12"), json!({})).await;
    // Meanwhile a second user is held by tokens: 10,000 a minute, each request charged its prompt
    // estimate plus `max_tokens` (50) when admitted and corrected to the 17 tokens it used.
    let (tokens_user, tokens_user_id) = cluster.user("f12t", None, json!({"tpm": 10_000})).await;
    let windows: i64 = if soak() { 5 } else { 1 };
    let now = now_ms();
    let first = now / 60_000 + 1;
    let end = (first + windows) * 60_000 + 300;
    let duration = Duration::from_millis(u64::try_from(end - now).unwrap());
    let by_tokens = super::background_load(&cluster, 20.0, duration, move |_| {
        (tokens_user.clone(), json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
    });
    let outcomes = {
        let (client, url) = (load::client(), cluster.url("/v1/chat/completions"));
        load::fixed_rate(20.0, duration, move |_, _| {
            load::request(client.clone(), url.clone(), token.clone(), crate::support::chat("m", "hi"))
        })
        .await
    };
    let by_tokens = by_tokens.await.unwrap();
    let limited: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 429).collect();
    assert!(outcomes.iter().all(|o| o.status == 200 || o.status == 429), "other statuses");
    for o in &limited {
        assert_eq!(o.json()["error"]["code"], "rate_limit_exceeded", "{:?}", o.body);
        assert!(o.retry_after.as_deref().and_then(|v| v.parse::<u64>().ok()).is_some(), "no retry-after");
    }
    // Admitted requests per minute window, by the time each node admitted them.
    let ids: Vec<String> = outcomes.iter().filter(|o| o.status == 200).filter_map(|o| o.request_id.clone()).collect();
    assert!(cluster.await_usage(&ids, Duration::from_secs(30)).await.is_empty());
    let store = cluster.store().await;
    let rows = switchyard::store::query_usage(store.conn(), &Default::default(), 1_000_000).await.unwrap();
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut tokens_per_window: BTreeMap<i64, i64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == 200) {
        if r.token_id == Some(tokens_user_id) {
            *tokens_per_window.entry(r.created_at / 60_000).or_default() += r.prompt_tokens + r.completion_tokens;
            continue;
        }
        *per_window.entry(r.created_at / 60_000).or_default() += 1;
        *per_node.entry(r.node.clone()).or_default() += 1;
    }
    println!(
        "F12: {} sent at 20/s, {} admitted, {} refused with 429; admitted per window {per_window:?}, per node \
         {per_node:?}; the 10,000 tokens/min user ({} requests at 20/s, 17 tokens each) used per window \
         {tokens_per_window:?}",
        outcomes.len(),
        ids.len(),
        limited.len(),
        by_tokens.len(),
    );
    assert!(by_tokens.iter().all(|o| o.status == 200 || o.status == 429), "other statuses");
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    for w in first..first + windows {
        let n = per_window.get(&w).copied().unwrap_or(0);
        assert!((600..=612).contains(&n), "window {w}: {n} admitted for a limit of 600");
        // Tokens: within +5 % of the limit, and not far under it (the estimate is corrected).
        let t = tokens_per_window.get(&w).copied().unwrap_or(0);
        assert!((9_000..=10_500).contains(&t), "window {w}: {t} tokens used for a limit of 10,000");
    }
}

/// F13 (CI form): a user with balance for exactly 100 requests sends 500 at once across the
/// three nodes while their settings are changed over and over.
async fn f13(db_url: String, name: &str) {
    let mock = MockUpstream::start(2);
    // Output costs $0.01 a token, input nothing: the mock reports 6 completion tokens, so a
    // request with `max_tokens: 6` reserves and costs exactly $0.06.
    let extra = format!(
        "{}[[prices]]\nmodel = \"m\"\ninput_per_million = 0.0\noutput_per_million = 10000.0\n",
        provider_toml("mock", &mock.base(), &["m"], "")
    );
    let cluster = Cluster::start(Options::new(db_url, extra)).await;
    let (token, id) = cluster.user("f13", None, json!({"quota_usd": 6.0})).await;
    let client = load::client();
    let url = cluster.url("/v1/chat/completions");
    let body = json!({"model": "m", "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]});
    let requests: Vec<_> = (0..500)
        .map(|_| actix_web::rt::spawn(load::request(client.clone(), url.clone(), token.clone(), body.clone())))
        .collect();
    // Meanwhile: the user tries to mint looser children and mints small ones; the admin keeps
    // changing the token's limits.
    let mut looser_refused = 0;
    for i in 0..30 {
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let me = cluster.url("/api/me/tokens");
        let r = crate::support::send("POST", &me, &headers, json!({"quota_usd": 1000.0}).to_string()).await;
        looser_refused += usize::from(r.status >= 400);
        crate::support::send("POST", &me, &headers, json!({"quota_usd": 0.5}).to_string()).await;
        let r = cluster.admin("PATCH", &format!("/tokens/{id}"), &json!({"rpm": 100_000 + i})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut outcomes = Vec::new();
    for r in requests {
        outcomes.push(r.await.unwrap());
    }
    let admitted = outcomes.iter().filter(|o| o.status == 200).count();
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 402).collect();
    let ids: Vec<String> = outcomes.iter().filter(|o| o.status == 200).filter_map(|o| o.request_id.clone()).collect();
    assert!(cluster.await_usage(&ids, Duration::from_secs(30)).await.is_empty(), "records missing");
    let store = cluster.store().await;
    let rows = switchyard::store::query_usage(store.conn(), &Default::default(), 1_000_000).await.unwrap();
    let spent: f64 = rows.iter().filter(|r| r.token_id == Some(id)).map(|r| r.cost_usd).sum();
    let after = cluster.chat(&token, "m").await;
    println!(
        "F13 ({name}): 500 concurrent requests on a $6.00 balance ($0.06 each): {admitted} served, {} refused \
         with 402, {} upstream calls; ledger sum ${spent:.4}; {looser_refused} of 30 looser child tokens refused",
        refused.len(),
        mock.calls(),
    );
    assert_eq!(admitted + refused.len(), 500, "{:?}", outcomes.iter().map(|o| o.status).collect::<Vec<_>>());
    assert_eq!(admitted, 100, "the balance pays for exactly 100 requests");
    assert_eq!(mock.calls(), 100, "a refused request reached the upstream");
    assert!((spent - 6.0).abs() < 1e-9, "ledger sum {spent}");
    assert_eq!(looser_refused, 30);
    after.assert_error(402, "insufficient_quota");
    let v: Value = refused[0].json();
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
}

#[actix_web::test]
async fn f13_quota_race_across_nodes_on_postgres() {
    let _serial = serial().await;
    f13(fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await, "Postgres").await;
}

#[actix_web::test]
async fn f13_quota_race_across_nodes_on_mariadb() {
    let _serial = serial().await;
    f13(fresh_database(&service_url("SWITCHYARD_TEST_MYSQL_URL")).await, "MariaDB").await;
}
