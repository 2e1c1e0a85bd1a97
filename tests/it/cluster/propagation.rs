//! F11: configuration changes made on one node reach every node within 2 s (p99 over 50 trials
//! of each kind): token revocation, a tier limit, a token's route allowlist, a user's provider
//! (and its key) withdrawn; and, with Redis stopped, through the database poll alone.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Cluster, Options, percentile_ms, provider_toml, serial, until_all, until_all_body};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{fresh_database, service_url};

const MASTER: &str = "7f3c2a91d04e5b68c7a1f0e2d3b4a5968778695a4b3c2d1e0f1e2d3c4b5a6978";

fn max_tokens_body(n: u64) -> Value {
    json!({"model": "m", "max_tokens": n, "messages": [{"role": "user", "content": "probe"}]})
}

/// A node picked by trial number (the change is made there, directly).
fn on(cluster: &Cluster, trial: usize, path: &str) -> String {
    cluster.nodes[trial % cluster.nodes.len()].url(&format!("/admin/api{path}"))
}

fn report(kind: &str, times: &mut [Duration]) -> f64 {
    let p99 = percentile_ms(times, 99.0);
    println!(
        "F11 {kind}: {} trials, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        percentile_ms(times, 50.0),
        p99,
        percentile_ms(times, 100.0)
    );
    p99
}

/// One revocation trial: a new token of `u11` works on every node; revoked on the trial's node;
/// the time until every node refuses it.
async fn revocation(cluster: &Cluster, trial: usize) -> Duration {
    let limit = Duration::from_secs(5);
    let r = cluster.admin("POST", "/tokens", &json!({"user": "u11"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let (token, id) = (v["token"].as_str().unwrap().to_owned(), v["id"].as_i64().unwrap());
    until_all(cluster, &token, "m", 200, limit).await.expect("a new token works everywhere");
    let r = cluster.admin_at(&on(cluster, trial, &format!("/tokens/{id}")), "DELETE", &Value::Null).await;
    assert_eq!(r.status, 204);
    until_all(cluster, &token, "m", 401, limit).await.expect("revocation reached every node")
}

#[actix_web::test]
async fn f11_changes_reach_every_node_within_two_seconds() {
    let _serial = serial().await;
    let mock = MockUpstream::start(2);
    mock.stop_recording();
    let extra = format!(
        "{}[security]\nmaster_key = \"{MASTER}\"\nendpoint_allowlist = [\"127.0.0.1:{}\"]\n",
        provider_toml("mock", &mock.base(), &["m"], ""),
        mock.port
    );
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let mut cluster = Cluster::start(Options::new(db, extra)).await;
    let r = cluster.admin("PUT", "/tiers/t11", &json!({"max_tokens": 1000})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (main, _) = cluster.user("u11", Some("t11"), json!({})).await;
    let (scoped, scoped_id) = cluster.user("u11b", None, json!({"routes": ["provider/mock/*"]})).await;
    let trials = 50;
    let limit = Duration::from_secs(5);
    let mut p99s = Vec::new();

    // Revocation.
    let mut times = Vec::new();
    for trial in 0..trials {
        times.push(revocation(&cluster, trial).await);
    }
    p99s.push(("revocation", report("revoke token", &mut times)));

    // A tier limit: max_tokens 1000 → 10 → 1000 …; a request for 100 is served, then refused.
    let mut times = Vec::new();
    for trial in 0..trials {
        let (cap, expect) = if trial % 2 == 0 { (10, 400) } else { (1000, 200) };
        let r = cluster.admin_at(&on(&cluster, trial, "/tiers/t11"), "PUT", &json!({"max_tokens": cap})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let t = until_all_body(&cluster, &main, &max_tokens_body(100), expect, limit).await;
        times.push(t.expect("the tier change reached every node"));
    }
    p99s.push(("tier limit", report("change tier limit", &mut times)));

    // A token's route allowlist: ["provider/mock/*"] ↔ ["other/*"].
    let mut times = Vec::new();
    for trial in 0..trials {
        let (routes, expect) =
            if trial % 2 == 0 { (json!(["other/*"]), 403) } else { (json!(["provider/mock/*"]), 200) };
        let path = format!("/tokens/{scoped_id}");
        let r = cluster.admin_at(&on(&cluster, trial, &path), "PATCH", &json!({"routes": routes})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        times.push(until_all(&cluster, &scoped, "m", expect, limit).await.expect("the allowlist reached every node"));
    }
    p99s.push(("token allowlist", report("change token allowlist", &mut times)));

    // A user's provider and its key withdrawn.
    let mut times = Vec::new();
    let provider = json!({"type": "openai", "endpoint": mock.base(), "models": [{"name": "m"}],
        "api_key": "sk-u11-upstream-key-000000000001"});
    for trial in 0..trials {
        let r = cluster.admin("PUT", "/users/u11/providers/gpu", &provider).await;
        assert_eq!(r.status, 200, "{}", r.text());
        until_all(&cluster, &main, "user-provider/gpu/m", 200, limit).await.expect("the provider works everywhere");
        let r = cluster.admin_at(&on(&cluster, trial, "/users/u11/providers/gpu"), "DELETE", &Value::Null).await;
        assert_eq!(r.status, 204, "{}", r.text());
        let t = until_all(&cluster, &main, "user-provider/gpu/m", 404, limit).await;
        times.push(t.expect("the withdrawal reached every node"));
    }
    p99s.push(("provider key", report("withdraw a provider key", &mut times)));

    // Redis stopped: the database poll (1 s here) carries revocations alone.
    cluster.redis.kill();
    let mut times = Vec::new();
    for trial in 0..5 {
        times.push(revocation(&cluster, trial).await);
    }
    let without_redis = report("revoke token, Redis stopped", &mut times);
    for (kind, p99) in p99s {
        assert!(p99 <= 2_000.0, "{kind}: p99 {p99:.0} ms");
    }
    // Within the poll interval (1 s) plus a reload.
    assert!(without_redis <= 3_000.0, "without Redis: {without_redis:.0} ms");
}
