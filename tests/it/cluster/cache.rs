//! The response cache on three nodes sharing a Redis: a miss on one node is a hit on another
//! (streams too), identical misses on one node make one upstream call, and a purge made on one
//! node is in force on all.

use serde_json::json;

use super::{Cluster, Options, provider_toml, serial};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Resp, chat, fresh_database, post_json, service_url};

fn cache(r: &Resp) -> Option<&str> {
    r.header("x-switchyard-cache")
}

#[actix_web::test]
async fn a_miss_on_one_node_is_a_hit_on_another() {
    let _serial = serial().await;
    let mock = MockUpstream::start(2);
    let extra = format!("{}[cache]\nenabled = true\nttl_secs = 60\n", provider_toml("mock", &mock.base(), &["m"], ""));
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let cluster = Cluster::start(Options::new(db, extra)).await;
    let (token, _) = cluster.user("cache-user", None, json!({})).await;
    let at = |i: usize| cluster.nodes[i].url("/v1/chat/completions");
    let body = chat("provider/mock/m", "shared answer");
    let a = post_json(&at(0), &token, &body).await;
    assert_eq!((a.status, cache(&a)), (200, Some("miss")), "{}", a.text());
    for i in [1, 2] {
        let b = post_json(&at(i), &token, &body).await;
        assert_eq!((b.status, cache(&b)), (200, Some("hit")), "node {}", i + 1);
        assert_eq!(b.body, a.body);
    }
    let mut stream = chat("provider/mock/m", "shared stream");
    stream["stream"] = json!(true);
    let a = post_json(&at(1), &token, &stream).await;
    assert_eq!(cache(&a), Some("miss"));
    let b = post_json(&at(2), &token, &stream).await;
    assert_eq!((cache(&b), b.text()), (Some("hit"), a.text()), "the stream, replayed on another node");
    assert_eq!(mock.calls(), 2);
    // Another tenant on any node: its own entries.
    let (other, _) = cluster.user("cache-other", None, json!({})).await;
    assert_eq!(cache(&post_json(&at(1), &other, &body).await), Some("miss"));
    // A purge on node 3 reaches node 1 (marked in the catalog, removed from Redis).
    let r =
        cluster.admin_at(&cluster.nodes[2].url("/admin/api/cache/purge"), "POST", &json!({"user": "cache-user"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["removed"].as_u64().is_some_and(|n| n >= 2), "{}", r.text());
    let again = post_json(&at(0), &token, &body).await;
    assert_eq!(cache(&again), Some("miss"));
    assert_eq!(cache(&post_json(&at(2), &other, &body).await), Some("hit"), "the other tenant's entry stays");
    assert_eq!(mock.calls(), 4);
}
