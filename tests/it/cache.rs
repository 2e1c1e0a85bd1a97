//! The response cache (SPEC §10), in process and in Redis: hits and misses, the canonical body,
//! tenant isolation (a seeded property run over users, routes and bodies), every
//! `Cache-Control` form, byte-identical stream replays in two dialects, what is never stored,
//! single flight, TTL, purges (admin API and CLI), usage records, limits and quotas of hits,
//! and a Redis killed under load.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard::config::{CacheScope, CostConfig, Settings};

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::services::PrivateRedis;
use crate::support::{Resp, TestApp, chat, get, openai_provider, rotation, send};

/// One provider `p` (model `m`, priced) on `mock`, a rotation `r` over it, a global rotation `g`
/// (`cache_scope = "global"`), a rotation `short` cached for 1 s and `nocache` never cached.
fn configure(s: &mut Settings, mock: &MockUpstream) {
    let mut p = openai_provider("p", &mock.base(), &["m"]);
    p.cost.insert(
        "m".into(),
        CostConfig {
            input_per_million: 1.0,
            output_per_million: 2.0,
            cached_input_per_million: None,
            cache_write_per_million: None,
        },
    );
    s.providers.push(p);
    // The mock speaks Anthropic Messages too: Messages clients pass through to it.
    let mut anth = openai_provider("anth", &mock.base(), &["claude"]);
    anth.kind = switchyard::types::ProviderKind::Anthropic;
    s.providers.push(anth);
    s.security.endpoint_allowlist = vec![format!("127.0.0.1:{}", mock.port)];
    let entry = || switchyard::config::RotationEntryConfig {
        provider_id: "p".into(),
        model: "m".into(),
        weight: 1.0,
        error_cooldown: Some(0),
    };
    s.rotations.push(rotation("r", "priority", vec![entry()]));
    let mut g = rotation("g", "priority", vec![entry()]);
    g.cache_scope = CacheScope::Global;
    s.rotations.push(g);
    let mut short = rotation("short", "priority", vec![entry()]);
    short.cache_ttl_secs = Some(1);
    s.rotations.push(short);
    let mut off = rotation("nocache", "priority", vec![entry()]);
    off.cache_ttl_secs = Some(0);
    s.rotations.push(off);
    s.cache.enabled = true;
    s.cache.ttl_secs = 60;
}

async fn app(mock: &MockUpstream) -> TestApp {
    TestApp::spawn(|s| configure(s, mock)).await
}

async fn ask(app: &TestApp, token: &str, body: &Value, cache_control: Option<&str>) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
    if let Some(c) = cache_control {
        h.push(("cache-control", c));
    }
    send("POST", &app.url("/v1/chat/completions"), &h, body.to_string()).await
}

fn cache_header(r: &Resp) -> Option<&str> {
    r.header("x-switchyard-cache")
}

/// A hit answers the miss's bytes with `Age`, makes no upstream call, and writes its own usage
/// record: provenance `cache`, the original's tokens, cost 0. A route cached 0 s has no header.
#[actix_web::test]
async fn a_hit_replays_the_answer_and_is_recorded_at_no_cost() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let body = chat("rotation/r", "what is a cache?");
    let miss = ask(&app, &token, &body, None).await;
    assert_eq!((miss.status, cache_header(&miss), miss.header("age")), (200, Some("miss"), None), "{}", miss.text());
    let hit = ask(&app, &token, &body, None).await;
    assert_eq!((hit.status, cache_header(&hit)), (200, Some("hit")));
    assert_eq!(hit.body, miss.body, "the stored answer, byte for byte");
    assert!(hit.header("age").is_some_and(|a| a.parse::<u64>().is_ok()));
    assert_eq!(hit.header("x-switchyard-reason"), Some("cache_hit"));
    assert_eq!(hit.header("x-switchyard-provider"), Some("p"));
    assert_eq!(mock.calls(), 1);
    let original = app.usage(miss.header("x-request-id").unwrap()).await;
    let replay = app.usage(hit.header("x-request-id").unwrap()).await;
    assert!(!original.cache_hit && original.cost_usd > 0.0);
    assert!(replay.cache_hit);
    assert_eq!(replay.usage_source, "cache");
    assert_eq!((replay.prompt_tokens, replay.completion_tokens), (original.prompt_tokens, original.completion_tokens));
    assert_eq!((replay.cost_usd, replay.status, replay.outcome.as_str()), (0.0, 200, "ok"));
    assert_eq!(replay.provider.as_deref(), Some("p"));
    // Never cached: no header, every request upstream.
    for _ in 0..2 {
        let r = ask(&app, &token, &chat("rotation/nocache", "what is a cache?"), None).await;
        assert_eq!((r.status, cache_header(&r)), (200, None));
    }
    assert_eq!(mock.calls(), 3);
    let m = send("GET", &app.url("/metrics"), &[], "").await.text();
    for needle in [
        r#"switchyard_cache_requests_total{result="hit"} 1"#,
        r#"switchyard_cache_requests_total{result="miss"} 1"#,
        "switchyard_cache_entries 1",
    ] {
        assert!(m.contains(needle), "{needle} missing from /metrics:\n{m}");
    }
    let status = get(&app.url("/admin/api/cache"), &app.admin_token).await.json();
    assert_eq!((status["enabled"].as_bool(), status["store"].as_str()), (Some(true), Some("memory")));
    app.stop().await;
}

/// Key order, whitespace, `user`, `metadata`, `stream_options` and the name the route is called
/// by do not count; anything else in the body does.
#[actix_web::test]
async fn the_key_is_the_canonical_body() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let auth = format!("Bearer {token}");
    let first = r#"{"model":"rotation/r","messages":[{"role":"user","content":"canon"}],"temperature":0.2}"#;
    let same = r#"{ "temperature" : 0.2 ,
        "messages" : [ { "content" : "canon" , "role" : "user" } ],
        "model" : "r", "user" : "end-user-7", "metadata" : {"trace" : "x"} }"#;
    let other = r#"{"model":"rotation/r","messages":[{"role":"user","content":"canon"}],"temperature":0.3}"#;
    let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let url = app.url("/v1/chat/completions");
    assert_eq!(cache_header(&send("POST", &url, &h, first).await), Some("miss"));
    assert_eq!(cache_header(&send("POST", &url, &h, same).await), Some("hit"));
    assert_eq!(cache_header(&send("POST", &url, &h, other).await), Some("miss"));
    assert_eq!(mock.calls(), 2);
    app.stop().await;
}

/// `no-store` neither reads nor writes; `no-cache` skips the read and stores the answer;
/// `max-age=N` takes only an entry at most N seconds old.
#[actix_web::test]
async fn every_cache_control_form() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let body = chat("rotation/r", "directives");
    let r = ask(&app, &token, &body, Some("no-store")).await;
    assert_eq!((r.status, cache_header(&r)), (200, Some("bypass")));
    assert_eq!(cache_header(&ask(&app, &token, &body, None).await), Some("miss"), "no-store stored nothing");
    assert_eq!(cache_header(&ask(&app, &token, &body, Some("no-store")).await), Some("bypass"), "nor read");
    assert_eq!(mock.calls(), 3);
    // no-cache: upstream again, and its answer replaces the stored one.
    mock.plan(Plan { content: Some("refreshed".into()), ..Plan::default() });
    let fresh = ask(&app, &token, &body, Some("No-Cache")).await;
    assert_eq!(cache_header(&fresh), Some("miss"));
    assert_eq!(fresh.json()["choices"][0]["message"]["content"], "refreshed");
    let hit = ask(&app, &token, &body, None).await;
    assert_eq!(
        (cache_header(&hit), hit.json()["choices"][0]["message"]["content"].as_str()),
        (Some("hit"), Some("refreshed"))
    );
    assert_eq!(mock.calls(), 4);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(cache_header(&ask(&app, &token, &body, Some("max-age=60")).await), Some("hit"));
    let r = ask(&app, &token, &body, Some("max-age=0")).await;
    assert_eq!(cache_header(&r), Some("miss"), "older than max-age=0");
    assert_eq!(r.header("age"), None);
    assert_eq!(mock.calls(), 5);
    app.stop().await;
}

/// A stream is stored after its last event and replayed as SSE, byte for byte; its usage chunk
/// only to a client that asks for usage (whatever the first one asked). A stream never gets a
/// whole answer nor the reverse. The same through `/v1/messages` (Anthropic clients).
#[actix_web::test]
async fn streams_replay_byte_for_byte_in_every_dialect() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let mut body = chat("rotation/r", "stream me");
    body["stream"] = json!(true);
    let miss = ask(&app, &token, &body, None).await;
    assert_eq!((miss.status, cache_header(&miss)), (200, Some("miss")));
    assert_eq!(miss.header("content-type"), Some("text/event-stream"));
    let hit = ask(&app, &token, &body, None).await;
    assert_eq!((cache_header(&hit), hit.header("content-type")), (Some("hit"), Some("text/event-stream")));
    assert_eq!(hit.text(), miss.text(), "byte-identical replay");
    assert!(!hit.text().contains("\"usage\""), "no usage chunk unasked");
    let mut with_usage = body.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    let r = ask(&app, &token, &with_usage, None).await;
    assert_eq!(cache_header(&r), Some("hit"));
    let events = crate::support::sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5, "{}", r.text());
    let whole = ask(&app, &token, &chat("rotation/r", "stream me"), None).await;
    assert_eq!((cache_header(&whole), whole.header("content-type")), (Some("miss"), Some("application/json")));
    assert_eq!(mock.calls(), 2);
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert!(rec.cache_hit && rec.stream);
    assert_eq!(rec.completion_tokens, 5);

    let auth = format!("Bearer {token}");
    let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let msg = json!({"model": "rotation/r", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "stream me"}]});
    let url = app.url("/v1/messages");
    let a = send("POST", &url, &h, msg.to_string()).await;
    assert_eq!((a.status, cache_header(&a)), (200, Some("miss")), "{}", a.text());
    let b = send("POST", &url, &h, msg.to_string()).await;
    assert_eq!(cache_header(&b), Some("hit"));
    assert_eq!(b.text(), a.text());
    assert!(b.text().contains("event: message_stop"));
    assert_eq!(mock.calls(), 3, "a Messages client has its own entries");
    // Messages to an Anthropic upstream (a passthrough): the stored stream ends with the
    // upstream's own last event.
    let msg = json!({"model": "provider/anth/claude", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "stream me"}]});
    let a = send("POST", &url, &h, msg.to_string()).await;
    assert_eq!((a.status, cache_header(&a)), (200, Some("miss")), "{}", a.text());
    assert!(a.text().ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), "{}", a.text());
    let b = send("POST", &url, &h, msg.to_string()).await;
    assert_eq!(cache_header(&b), Some("hit"));
    assert_eq!(b.text(), a.text(), "the passthrough stream, whole");
    // A beta header the upstream receives makes another answer: another entry.
    let beta = [h[0], h[1], ("anthropic-beta", "tools-2024-04-04")];
    assert_eq!(cache_header(&send("POST", &url, &beta, msg.to_string()).await), Some("miss"));
    assert_eq!(mock.calls(), 5);
    app.stop().await;
}

/// Errors, upstream rejections and cut streams are never stored: the next identical request
/// goes upstream again.
#[actix_web::test]
async fn errors_and_cut_streams_are_never_stored() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let direct = chat("provider/p/m", "fail first");
    mock.plan(Plan { status: 500, ..Plan::default() });
    assert_eq!(ask(&app, &token, &direct, None).await.status, 502);
    mock.plan(Plan { status: 400, error_body: Some(r#"{"error":{"message":"bad"}}"#.into()), ..Plan::default() });
    assert_eq!(ask(&app, &token, &direct, None).await.status, 400);
    let ok = ask(&app, &token, &direct, None).await;
    assert_eq!((ok.status, cache_header(&ok)), (200, Some("miss")));
    assert_eq!(mock.calls(), 3);
    let mut stream = chat("provider/p/m", "cut me");
    stream["stream"] = json!(true);
    mock.plan(Plan { cut_after: Some(2), ..Plan::default() });
    let cut = ask(&app, &token, &stream, None).await;
    assert!(cut.text().contains("upstream_error"), "{}", cut.text());
    let whole = ask(&app, &token, &stream, None).await;
    assert_eq!(cache_header(&whole), Some("miss"), "the cut stream was not stored");
    assert!(whole.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(cache_header(&ask(&app, &token, &stream, None).await), Some("hit"));
    assert_eq!(mock.calls(), 5);
    app.stop().await;
}

/// 20 identical requests at once on one node: one upstream call; the others wait for it and
/// each gets its own usage record.
#[actix_web::test]
async fn twenty_identical_misses_make_one_upstream_call() {
    let mock = MockUpstream::start(2);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    mock.plan(Plan { times: 20, delay_headers_ms: 400, ..Plan::default() });
    let body = chat("rotation/r", "all at once");
    let all: Vec<Resp> = futures_util::future::join_all((0..20).map(|_| ask(&app, &token, &body, None))).await;
    assert!(all.iter().all(|r| r.status == 200), "{:?}", all.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(mock.calls(), 1, "one upstream call");
    let misses = all.iter().filter(|r| cache_header(r) == Some("miss")).count();
    assert_eq!(misses, 1);
    assert!(all.iter().all(|r| r.body == all[0].body));
    let mut hits = 0;
    for r in &all {
        hits += usize::from(app.usage(r.header("x-request-id").unwrap()).await.cache_hit);
    }
    assert_eq!(hits, 19, "one record each; 19 of them hits");
    // A stream flight too: the followers get the stored stream.
    let mut s = chat("rotation/r", "stream at once");
    s["stream"] = json!(true);
    mock.heal();
    mock.plan(Plan { times: 5, chunk_interval_ms: 50, ..Plan::default() });
    let all: Vec<Resp> = futures_util::future::join_all((0..5).map(|_| ask(&app, &token, &s, None))).await;
    assert_eq!(mock.calls(), 2);
    assert!(all.iter().all(|r| r.text() == all[0].text() && r.text().ends_with("data: [DONE]\n\n")));
    app.stop().await;
}

/// An entry lives its route's `cache_ttl_secs`.
#[actix_web::test]
async fn entries_expire_after_their_ttl() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let body = chat("rotation/short", "ttl");
    assert_eq!(cache_header(&ask(&app, &token, &body, None).await), Some("miss"));
    assert_eq!(cache_header(&ask(&app, &token, &body, None).await), Some("hit"));
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(cache_header(&ask(&app, &token, &body, None).await), Some("miss"));
    assert_eq!(mock.calls(), 2);
    app.stop().await;
}

/// Tenant isolation, as a seeded property run: three users send 60 requests drawn from two
/// bodies on a tenant route and a `global` route, in random order. A request hits exactly when
/// an earlier one had the same body on the same route and either the route is global or the
/// earlier one was the same user's; every other request goes upstream.
#[actix_web::test]
async fn no_tenant_ever_gets_another_tenants_answer() {
    let mock = MockUpstream::start(2);
    let app = app(&mock).await;
    let users = ["ann", "ben", "cid"];
    let mut tokens = Vec::new();
    for u in users {
        tokens.push(app.user_with_token(u).await);
    }
    let routes = ["rotation/r", "rotation/g"];
    let mut seen: Vec<(usize, usize, usize)> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut upstream = 0;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pick = |v: u64, n: u64| usize::try_from(v % n).unwrap();
        let (u, r, b) = (pick(x, 3), pick(x >> 8, 2), pick(x >> 16, 2));
        let resp = ask(&app, &tokens[u], &chat(routes[r], &format!("body {b}")), None).await;
        let global = r == 1;
        let expect_hit = seen.iter().any(|&(su, sr, sb)| sr == r && sb == b && (global || su == u));
        assert_eq!(cache_header(&resp), Some(if expect_hit { "hit" } else { "miss" }), "user {u} route {r} body {b}");
        upstream += usize::from(!expect_hit);
        assert_eq!(mock.calls(), upstream);
        seen.push((u, r, b));
    }
    assert!(upstream > 4 && upstream < 60, "the run exercised both outcomes: {upstream}");
    app.stop().await;
}

/// Admission runs before the cache: a hit counts toward the request rate (and no tokens), and a
/// spent quota refuses a request that would hit, which otherwise spends nothing.
#[actix_web::test]
async fn hits_count_toward_rate_limits_and_are_refused_on_a_spent_quota() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let c = app.control().await;
    c.create_user("alice", switchyard::types::Role::User, None, None).await.unwrap();
    // Four requests in one fixed minute window.
    let into_minute = switchyard::types::now_ms() % 60_000;
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(60_500 - into_minute).unwrap())).await;
    }
    let mut req = switchyard::control::NewTokenRequest::for_user("alice");
    req.rpm = Some(3);
    let (limited, _) = c.create_token(req).await.unwrap();
    let body = chat("rotation/r", "limited");
    for want in ["miss", "hit", "hit"] {
        assert_eq!(cache_header(&ask(&app, &limited, &body, None).await), Some(want));
    }
    ask(&app, &limited, &body, None).await.assert_error(429, "rate_limit_exceeded");
    // The answer is alice's; a token of hers whose quota is spent (0 allows nothing) is refused
    // before the cache is read.
    let (free, _) = c.create_token(switchyard::control::NewTokenRequest::for_user("alice")).await.unwrap();
    let mut req = switchyard::control::NewTokenRequest::for_user("alice");
    req.quota_usd = Some(0.0);
    let (spent, _) = c.create_token(req).await.unwrap();
    let body = chat("rotation/r", "quota");
    assert_eq!(cache_header(&ask(&app, &free, &body, None).await), Some("miss"));
    assert_eq!(cache_header(&ask(&app, &free, &body, None).await), Some("hit"));
    ask(&app, &spent, &body, None).await.assert_error(402, "insufficient_quota");
    assert_eq!(mock.calls(), 2);
    app.stop().await;
}

/// Purges through the admin API (a user's entries, then a route's) and the CLI (every entry,
/// reaching the running node through its catalog).
#[actix_web::test]
async fn purges_by_user_and_route_from_the_api_and_the_cli() {
    let mock = MockUpstream::start(1);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sy.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let app = TestApp::spawn(|s| {
        configure(s, &mock);
        s.database.url = switchyard::config::Secret::new(url.clone());
    })
    .await;
    let (ann, ben) = (app.user_with_token("ann").await, app.user_with_token("ben").await);
    let body = chat("rotation/r", "purge me");
    for t in [&ann, &ben] {
        assert_eq!(cache_header(&ask(&app, t, &body, None).await), Some("miss"));
    }
    let admin = |path: &str, v: Value| {
        let auth = format!("Bearer {}", app.admin_token);
        let url = app.url(path);
        async move {
            send("POST", &url, &[("authorization", &auth), ("content-type", "application/json")], v.to_string()).await
        }
    };
    let r = admin("/admin/api/cache/purge", json!({"user": "ann"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["removed"], 1);
    assert_eq!(cache_header(&ask(&app, &ben, &body, None).await), Some("hit"));
    assert_eq!(cache_header(&ask(&app, &ann, &body, None).await), Some("miss"));
    let r = admin("/admin/api/cache/purge", json!({"route": "r"})).await;
    assert_eq!(r.json()["purged"]["route"], "rotation/r", "named as the tenant would name it");
    assert_eq!(r.json()["removed"], 2);
    assert_eq!(cache_header(&ask(&app, &ben, &body, None).await), Some("miss"));
    admin("/admin/api/cache/purge", json!({"user": "nobody"})).await.assert_error(404, "not_found");
    admin("/admin/api/cache/purge", json!({"route": "rotation/none"})).await.assert_error(404, "not_found");
    admin("/admin/api/cache/purge", json!({"users": "ann"})).await.assert_error(400, "invalid_request");
    let r =
        send("POST", &app.url("/admin/api/cache/purge"), &[("authorization", &format!("Bearer {ann}"))], "{}").await;
    r.assert_error(403, "permission_denied");
    // The CLI marks the purge in the database; the node's catalog carries it to its cache.
    assert_eq!(cache_header(&ask(&app, &ann, &body, None).await), Some("miss"), "purged with the route");
    assert_eq!(cache_header(&ask(&app, &ann, &body, None).await), Some("hit"));
    std::fs::write(dir.path().join("sy.toml"), format!("[database]\nurl = \"{url}\"\n[log]\nlevel = \"warn\"\n"))
        .unwrap();
    // A second process writing the node's SQLite file may meet its lock under a loaded machine:
    // the CLI is run again, as an operator would (what it said each time is shown on failure).
    let mut said = Vec::new();
    let mut out = None;
    for _ in 0..3 {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .env_remove("SWITCHYARD_CONFIG")
            .current_dir(dir.path())
            .args(["--config", "sy.toml", "--json", "cache", "purge"])
            .output()
            .unwrap();
        // With --json the CLI says what failed on stdout.
        said.push(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
        if o.status.success() {
            out = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = out.unwrap_or_else(|| panic!("the CLI failed: {said:?}"));
    let v: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(v["removed"], Value::Null, "an embedded node's cache is in its process");
    let mut purged = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cache_header(&ask(&app, &ann, &body, None).await) == Some("miss") {
            purged = true;
            break;
        }
    }
    assert!(purged, "the CLI's purge reached the node");
    app.stop().await;
}

/// A user's own routes never share entries: `cache_scope = "global"` is refused on them.
#[actix_web::test]
async fn users_routes_cannot_be_global() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let c = app.control().await;
    c.create_user("ann", switchyard::types::Role::User, None, None).await.unwrap();
    let spec = json!({"strategy": "priority", "entries": [], "cache_scope": "global"});
    let e = c.put_user_object("ann", switchyard::control::ObjectKind::Rotation, "mine", spec).await.unwrap_err();
    assert!(e.to_string().contains("global routes"), "{e}");
    app.stop().await;
}

/// In Redis: a hit after a miss, and Redis killed under load — every request still served
/// (bypassing the cache, not waiting on it); caching again once Redis is back.
#[actix_web::test]
async fn redis_cache_and_redis_killed_under_load() {
    let mock = MockUpstream::start(2);
    mock.stop_recording();
    let mut redis = PrivateRedis::start();
    let app = TestApp::spawn(|s| {
        configure(s, &mock);
        s.redis.url = Some(switchyard::config::Secret::new(redis.url.clone()));
    })
    .await;
    let token = app.user_with_token("alice").await;
    let body = chat("rotation/r", "in redis");
    assert_eq!(cache_header(&ask(&app, &token, &body, None).await), Some("miss"));
    assert_eq!(cache_header(&ask(&app, &token, &body, None).await), Some("hit"));
    let status = get(&app.url("/admin/api/cache"), &app.admin_token).await.json();
    assert_eq!(status["store"], "redis");
    let load = {
        let (url, token) = (app.url("/v1/chat/completions"), token.clone());
        actix_web::rt::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..60 {
                let auth = format!("Bearer {token}");
                let b = chat("rotation/r", &format!("load {}", i % 6));
                let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
                let r = send("POST", &url, &h, b.to_string()).await;
                statuses.push((r.status, cache_header(&r).map(str::to_owned)));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert!(statuses.iter().any(|(_, c)| c.as_deref() == Some("bypass")), "{statuses:?}");
    redis.restart();
    let mut back = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = chat("rotation/r", &format!("after {i}"));
        let r = ask(&app, &token, &after, None).await;
        if cache_header(&r) == Some("miss") && cache_header(&ask(&app, &token, &after, None).await) == Some("hit") {
            back = true;
            break;
        }
    }
    assert!(back, "caching resumed once Redis returned");
    app.stop().await;
}

/// OpenAI Responses clients: a whole answer and a stream, each stored in the Responses dialect
/// and replayed byte for byte; a Chat request of the same text has its own entry.
#[actix_web::test]
async fn responses_clients_hit_their_own_entries() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let token = app.user_with_token("alice").await;
    let auth = format!("Bearer {token}");
    let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let url = app.url("/v1/responses");
    for stream in [false, true] {
        let body = json!({"model": "rotation/r", "input": "responses please", "stream": stream});
        let a = send("POST", &url, &h, body.to_string()).await;
        assert_eq!((a.status, cache_header(&a)), (200, Some("miss")), "{}", a.text());
        let b = send("POST", &url, &h, body.to_string()).await;
        assert_eq!(cache_header(&b), Some("hit"));
        assert_eq!(b.text(), a.text());
    }
    assert_eq!(cache_header(&ask(&app, &token, &chat("rotation/r", "responses please"), None).await), Some("miss"));
    assert_eq!(mock.calls(), 3);
    app.stop().await;
}

/// Namespaces: an admin acting in a user's namespace (`/api/u/{user}/…`) is that tenant and
/// shares its entries; two users' own routes of the same name never share one.
#[actix_web::test]
async fn namespaces_and_same_named_user_routes_stay_apart() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let (ann, ben) = (app.user_with_token("ann").await, app.user_with_token("ben").await);
    let auth = format!("Bearer {}", app.admin_token);
    let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    for user in ["ann", "ben"] {
        let spec = json!({"type": "openai", "endpoint": mock.base(), "models": [{"name": "m"}]});
        let r = send("PUT", &app.url(&format!("/admin/api/users/{user}/providers/mine")), &h, spec.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The node's catalog reloads on the announcement: wait until both see their route.
    for token in [&ann, &ben] {
        let mut listed = false;
        for _ in 0..50 {
            if get(&app.url("/v1/models"), token).await.text().contains("user-provider/mine/m") {
                listed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(listed, "the route never appeared");
    }
    let body = chat("user-provider/mine/m", "my own");
    assert_eq!(cache_header(&ask(&app, &ann, &body, None).await), Some("miss"));
    let r = ask(&app, &ben, &body, None).await;
    assert_eq!((r.status, cache_header(&r)), (200, Some("miss")), "ben's route of the same name: {}", r.text());
    assert_eq!(cache_header(&ask(&app, &ann, &body, None).await), Some("hit"));
    let as_ann = send("POST", &app.url("/api/u/ann/chat/completions"), &h, body.to_string()).await;
    assert_eq!((as_ann.status, cache_header(&as_ann)), (200, Some("hit")), "{}", as_ann.text());
    // The admin in its own namespace has no such route; on a global route it is its own tenant.
    let global = chat("rotation/r", "admin's own");
    assert_eq!(cache_header(&ask(&app, &ann, &global, None).await), Some("miss"));
    assert_eq!(cache_header(&ask(&app, &app.admin_token, &global, None).await), Some("miss"));
    assert_eq!(mock.calls(), 4);
    app.stop().await;
}
