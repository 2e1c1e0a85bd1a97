//! Hardening against a hostile tenant and a careless client (issue 10): each test is a defect
//! found by a probe, and fails without its fix. TESTPLAN S1, S2, S7, S8, S11, S13 and F6 classes.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use switchyard::config::{PriceConfig, Secret};
use switchyard::types::Locality;

use crate::autoselect::{autoselect as autoselect_with, candidate};
use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{Resp, TestApp, chat, openai_provider, post_json, send};

const MASTER: &str = "8f3a9c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f90112233445566778899aabbccd";

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
    let auth = format!("Bearer {token}");
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    send(method, &app.url(path), &headers, body.map(|b| b.to_string()).unwrap_or_default()).await
}

/// Creates a user (on `tier`, if any) and a token with `scope` (extra token fields).
async fn user(app: &TestApp, name: &str, tier: Option<&str>, scope: Value) -> (String, i64) {
    let a = &app.admin_token;
    let r = call(app, "POST", "/admin/api/users", a, Some(json!({"username": name}))).await;
    assert!(r.status < 300, "{}", r.text());
    if let Some(t) = tier {
        let r = call(app, "PATCH", &format!("/admin/api/users/{name}"), a, Some(json!({"tier": t}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut body = json!({"user": name});
    if let (Some(b), Some(s)) = (body.as_object_mut(), scope.as_object()) {
        b.extend(s.clone());
    }
    let t = call(app, "POST", "/admin/api/tokens", a, Some(body)).await;
    assert!(t.status < 300, "{}", t.text());
    let t = t.json();
    (t["token"].as_str().unwrap().to_owned(), t["id"].as_i64().unwrap())
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(450)).await;
}

/// Defect 1: a prompt far over a model's context is refused after admission (so refusals count
/// against the token's rate limit) and without holding the workers: another tenant is served
/// while several multi-megabyte prompts are being refused, and each refusal has its record.
#[actix_web::test]
async fn d1_large_prompts_are_admitted_first_and_counted_off_the_workers() {
    let mock = MockUpstream::start(1);
    let base = mock.base();
    let app = TestApp::spawn(move |s| {
        s.server.workers = 1;
        let mut p = openai_provider("a", &base, &["small", "big"]);
        p.models[0].context_size = Some(1_000);
        p.models[1].context_size = Some(200_000);
        s.providers.push(p);
    })
    .await;
    let (hostile, _) = user(&app, "hostile", None, json!({"rpm": 3})).await;
    let (other, _) = user(&app, "other", None, json!({})).await;
    settle().await;
    let url = app.url("/v1/chat/completions");
    // Words, so the byte bound (2.4 MB) is within 32 bytes a token of the big model's window
    // and the prompt is really counted (about 400,000 tokens: over it).
    let huge = "lorem ipsum dolor sit amet ".repeat(90_000);
    // Rate-limit windows are fixed minutes: start early in one, so that the three refusals and
    // the request after them fall in the same window (a run that crossed into the next minute
    // saw that request admitted).
    let into_minute = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60;
    if into_minute > 40 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let calls = mock.calls();
    let refused: Vec<Resp> = {
        let big = json!({"model": "provider/a/big", "messages": [{"role": "user", "content": huge}]});
        let hostile_calls = join_all((0..3).map(|_| post_json(&url, &hostile, &big)));
        let served = async {
            let mut ok = 0;
            for _ in 0..5 {
                ok += usize::from(post_json(&url, &other, &chat("provider/a/small", "hi")).await.status == 200);
            }
            ok
        };
        let (refused, ok) = futures_util::join!(hostile_calls, served);
        assert_eq!(ok, 5, "the other tenant was not served while large prompts were refused");
        refused
    };
    for r in &refused {
        let e = r.assert_error(400, "invalid_request");
        assert!(e["error"]["message"].as_str().unwrap().contains("context"), "{e}");
    }
    // The three refusals used the token's 3 requests a minute: the fourth is a 429 at once.
    let small = json!({"model": "provider/a/small", "messages": [{"role": "user", "content": "x".repeat(500_000)}]});
    post_json(&url, &hostile, &small).await.assert_error(429, "rate_limit_exceeded");
    assert_eq!(mock.calls() - calls, 5, "only the other tenant's requests reach the upstream");
    for r in &refused {
        let row = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!((row.status, row.outcome.as_str(), row.cost_usd), (400, "refused", 0.0));
        assert!(row.prompt_tokens > 100_000, "the refusal counts its prompt: {}", row.prompt_tokens);
    }
    app.stop().await;
}

/// Defect 2: a user autoselect's privacy keywords changed through `/api/me/autoselects/…` take
/// effect with the next catalog version, not at the next restart.
#[actix_web::test]
async fn d2_privacy_rules_follow_the_catalog() {
    let (local, cloud) = (MockUpstream::start(1), MockUpstream::start(1));
    let allow = vec![format!("127.0.0.1:{}", local.port), format!("127.0.0.1:{}", cloud.port)];
    let app = TestApp::spawn(move |s| {
        s.security.master_key = Some(Secret::new(MASTER));
        s.security.endpoint_allowlist = allow;
    })
    .await;
    let (alice, _) = user(&app, "alice", None, json!({})).await;
    for (name, mock, locality) in [("near", &local, "local"), ("far", &cloud, "cloud")] {
        let p = json!({"type": "openai", "endpoint": mock.base(), "locality": locality, "models": [{"name": "m"}]});
        let r = call(&app, "PUT", &format!("/api/me/providers/{name}"), &alice, Some(p)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let pick = |word: &str| {
        json!({"classify_privacy": true, "privacy_keywords": [word], "available_models": [
            {"route": "user-provider/far/m"}, {"route": "user-provider/near/m", "privacy": true}]})
    };
    let r = call(&app, "PUT", "/api/me/autoselects/pick", &alice, Some(pick("alpha"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    settle().await;
    let url = app.url("/v1/chat/completions");
    let reason = |r: &Resp| (r.status, r.header("x-switchyard-provider").map(str::to_owned));
    let r = post_json(&url, &alice, &chat("user-autoselect/pick", "about alpha")).await;
    assert_eq!(reason(&r), (200, Some("alice/near".into())), "{}", r.text());
    let r = post_json(&url, &alice, &chat("user-autoselect/pick", "about beta")).await;
    assert_eq!(reason(&r), (200, Some("alice/far".into())), "{}", r.text());
    // The rule changes: beta is private now, alpha is not.
    let r = call(&app, "PUT", "/api/me/autoselects/pick", &alice, Some(pick("beta"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    settle().await;
    let r = post_json(&url, &alice, &chat("user-autoselect/pick", "about beta")).await;
    assert_eq!(reason(&r), (200, Some("alice/near".into())), "the old rule still applies: {}", r.text());
    let r = post_json(&url, &alice, &chat("user-autoselect/pick", "about alpha")).await;
    assert_eq!(reason(&r), (200, Some("alice/far".into())), "{}", r.text());
    app.stop().await;
}

/// Defect 3: every route an autoselect calls — candidates, the fallback, the selection model —
/// is held to the caller's token, its ancestors and its tier; what is out of scope is dropped
/// (the receipt says `scope`), and nothing out of scope is ever called.
#[actix_web::test]
async fn d3_autoselect_calls_only_routes_the_caller_may_use() {
    let (local, cloud) = (MockUpstream::start(1), MockUpstream::start(1));
    let (l2, c2) = (local.base(), cloud.base());
    let app = TestApp::spawn(move |s| {
        s.providers.push(openai_provider("local", &l2, &["m"]));
        let mut c = openai_provider("cloud", &c2, &["m", "n"]);
        c.locality = Locality::Cloud;
        s.providers.push(c);
        s.autoselects.push(autoselect_with(
            "eng",
            "rules",
            Some("provider/local/m"),
            vec![candidate("provider/cloud/m", false), candidate("provider/local/m", true)],
        ));
        let mut llm = autoselect_with(
            "picky",
            "llm",
            None,
            vec![candidate("provider/cloud/m", false), candidate("provider/cloud/n", false)],
        );
        llm.selection_model = Some("provider/local/m".into());
        s.autoselects.push(llm);
    })
    .await;
    let a = app.admin_token.clone();
    let r = call(&app, "PUT", "/admin/api/tiers/narrow", &a, Some(json!({"routes": ["autoselect/*"]}))).await;
    assert!(r.status < 300, "{}", r.text());
    let (only_auto, _) = user(&app, "t1", None, json!({"routes": ["autoselect/eng"]})).await;
    let (local_ok, _) = user(&app, "t2", None, json!({"routes": ["autoselect/*", "provider/cloud/*"]})).await;
    let (tiered, _) = user(&app, "t3", Some("narrow"), json!({})).await;
    settle().await;
    let url = app.url("/v1/chat/completions");
    let calls = || local.calls() + cloud.calls();
    let before = calls();
    // Every candidate and the fallback out of scope: 403, nothing called.
    post_json(&url, &only_auto, &chat("autoselect/eng", "hi")).await.assert_error(403, "permission_denied");
    post_json(&url, &tiered, &chat("autoselect/eng", "hi")).await.assert_error(403, "permission_denied");
    assert_eq!(calls(), before, "an out-of-scope route was called");
    // The local candidate and the fallback are out of scope: cloud serves, the receipt says why.
    let r = post_json(&url, &local_ok, &chat("autoselect/eng", "hi")).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("cloud")), "{}", r.text());
    let row = app.usage(r.header("x-request-id").unwrap()).await;
    let receipt: Value = serde_json::from_str(row.routing.as_deref().unwrap()).unwrap();
    assert!(receipt.to_string().contains(r#""filtered":"scope""#), "{receipt}");
    // A private prompt may only go to the local candidate, which is out of scope: refused, never
    // sent to the cloud.
    let r = post_json(&url, &local_ok, &chat("autoselect/eng", "my email is a@example.com")).await;
    r.assert_error(403, "privacy_route_unavailable");
    assert_eq!(local.calls(), 0, "the local model was called out of scope");
    // The llm selection model is out of scope: no selection call, the first candidate serves.
    let r = post_json(&url, &local_ok, &chat("autoselect/picky", "hi")).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("cloud")), "{}", r.text());
    assert_eq!(local.calls(), 0, "the selection model was called out of scope");
    let row = app.usage(r.header("x-request-id").unwrap()).await;
    assert!(row.routing.as_deref().unwrap().contains("selection_route_forbidden"), "{:?}", row.routing);
    app.stop().await;
}

/// Defect 4: an upstream that reports far more tokens than the request allowed is billed at
/// most what the request allowed (`usage_source = capped`), so 20 concurrent `max_tokens: 1`
/// requests cannot overdraw a $0.01 quota by more than the prompt allowance of those in flight;
/// and a tier's cap applies to every field an upstream may read as the output limit.
#[actix_web::test]
async fn d4_over_reporting_upstreams_cannot_overdraw_and_caps_cover_every_limit_field() {
    let mock = MockUpstream::start(2);
    let base = mock.base();
    let app = TestApp::spawn(move |s| {
        s.providers.push(openai_provider("a", &base, &["m"]));
        s.prices.push(PriceConfig {
            model: "m".into(),
            provider: None,
            input_per_million: 1.0,
            output_per_million: 1_000.0,
            cached_input_per_million: None,
            cache_write_per_million: None,
            aliases: vec![],
        });
    })
    .await;
    let a = app.admin_token.clone();
    call(&app, "PUT", "/admin/api/tiers/capped", &a, Some(json!({"max_tokens": 100}))).await;
    let (t, _) = user(&app, "payer", Some("capped"), json!({"quota_usd": 0.01})).await;
    settle().await;
    let url = app.url("/v1/chat/completions");
    mock.plan(Plan {
        times: 1_000,
        delay_headers_ms: 200,
        usage: Some(json!({"prompt_tokens": 100_000, "completion_tokens": 100_000, "total_tokens": 200_000})),
        ..Plan::default()
    });
    let one = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    let results = join_all((0..20).map(|_| post_json(&url, &t, &one))).await;
    let served: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
    assert!(!served.is_empty());
    let mut total = 0.0;
    for r in &served {
        let row = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!(row.usage_source, "capped");
        assert_eq!(row.completion_tokens, 1, "billed output is at most max_tokens");
        assert!(row.prompt_tokens <= 70, "billed prompt is at most the prompt's bound: {}", row.prompt_tokens);
        total += row.cost_usd;
    }
    // Each request reserves its prompt estimate and one output token ($0.001005); what it may be
    // billed past that is its prompt allowance (65 tokens at $1/M) — 20 in flight at most.
    assert!(total <= 0.01 + 20.0 * 65e-6 + 1e-9, "quota overdrawn: spent ${total}");
    assert!(served.len() < 20, "the quota never bound");
    for r in results.iter().filter(|r| r.status != 200) {
        r.assert_error(402, "insufficient_quota");
    }
    // The tier's cap (100) on every field an upstream may read as the limit.
    let calls = mock.calls();
    for (field, value) in [
        ("max_tokens", json!(10_000)),
        ("n_predict", json!(10_000)),
        ("max_new_tokens", json!(10_000)),
        ("num_predict", json!(10_000)),
        ("max_output_tokens", json!(10_000)),
    ] {
        let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5});
        b[field] = value;
        let e = post_json(&url, &t, &b).await.assert_error(400, "invalid_request");
        assert_eq!(e["error"]["param"], field);
    }
    let b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 500}});
    post_json(&url, &t, &b).await.assert_error(400, "invalid_request");
    assert_eq!(mock.calls(), calls, "an over-cap request reached the upstream");
    // Defect 11's policy: a request no upstream answered costs nothing; its record keeps the
    // prompt estimate (for the token limits) and says why.
    mock.heal();
    mock.plan(Plan { status: 500, ..Plan::default() });
    let (free, _) = user(&app, "unanswered", None, json!({})).await;
    settle().await;
    let r = post_json(&url, &free, &chat("m", "hi")).await;
    r.assert_error(502, "upstream_error");
    let row = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!((row.status, row.outcome.as_str(), row.cost_usd), (502, "upstream_error", 0.0));
    assert!(row.prompt_tokens > 0 && row.completion_tokens == 0);
    app.stop().await;
}

/// Defect 6: a child token manages and reads only itself and the tokens below it; child scopes
/// are checked by matching (a `provider/?/*` parent cannot mint `provider/*/*`).
#[actix_web::test]
async fn d6_child_tokens_reach_only_their_subtree() {
    let mock = MockUpstream::start(1);
    let base = mock.base();
    let app = TestApp::spawn(move |s| s.providers.push(openai_provider("a", &base, &["m"]))).await;
    let (root, root_id) = user(&app, "alice", None, json!({"routes": ["provider/?/*"]})).await;
    let (sibling, sibling_id) = {
        let r = call(&app, "POST", "/admin/api/tokens", &app.admin_token, Some(json!({"user": "alice"}))).await;
        let v = r.json();
        (v["token"].as_str().unwrap().to_owned(), v["id"].as_i64().unwrap())
    };
    let mint = |token: &str, routes: Value| {
        let token = token.to_owned();
        let app = &app;
        async move { call(app, "POST", "/api/me/tokens", &token, Some(json!({"routes": routes}))).await }
    };
    mint(&root, json!(["provider/*/*"])).await.assert_error(403, "permission_denied");
    let child = mint(&root, json!(["provider/a/*"])).await.json();
    let (child, child_id) = (child["token"].as_str().unwrap().to_owned(), child["id"].as_i64().unwrap());
    let grand = mint(&child, json!(["provider/a/m"])).await.json();
    let (grand, grand_id) = (grand["token"].as_str().unwrap().to_owned(), grand["id"].as_i64().unwrap());
    settle().await;
    for t in [&root, &sibling, &child, &grand] {
        assert_eq!(post_json(&app.url("/v1/chat/completions"), t, &chat("provider/a/m", "hi")).await.status, 200);
    }
    settle().await;
    let ids = |r: Resp| -> Vec<i64> {
        r.json()["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect()
    };
    assert_eq!(ids(call(&app, "GET", "/api/me/tokens", &child, None).await), vec![child_id, grand_id]);
    assert_eq!(ids(call(&app, "GET", "/api/me/tokens", &root, None).await).len(), 4);
    // The child's usage is its subtree's (2 requests), the root's is the user's (4).
    let count = |r: Resp| r.json()["total"]["requests"].as_u64().unwrap_or_else(|| panic!("{}", r.text()));
    assert_eq!(count(call(&app, "GET", "/api/me/usage", &child, None).await), 2);
    assert_eq!(count(call(&app, "GET", "/api/me/usage", &root, None).await), 4);
    // Neither the parent nor a sibling can be revoked from below; the grandchild can.
    for id in [root_id, sibling_id] {
        call(&app, "DELETE", &format!("/api/me/tokens/{id}"), &child, None).await.assert_error(404, "not_found");
    }
    assert_eq!(call(&app, "DELETE", &format!("/api/me/tokens/{grand_id}"), &child, None).await.status, 204);
    settle().await;
    for t in [&root, &sibling, &child] {
        assert_eq!(post_json(&app.url("/v1/chat/completions"), t, &chat("provider/a/m", "hi")).await.status, 200);
    }
    post_json(&app.url("/v1/chat/completions"), &grand, &chat("provider/a/m", "hi"))
        .await
        .assert_error(401, "invalid_token");
    app.stop().await;
}

/// Defect 10: fragments (8+ characters) and base64 forms of a provider key echoed in an upstream
/// error never reach the client; `/metrics` takes a bearer token and labels users' providers
/// and routes as `user` (bounded label sets, no tenant names).
#[actix_web::test]
async fn d10_key_fragments_never_echo_and_metrics_are_bounded_and_protected() {
    use base64::Engine as _;
    let mock = MockUpstream::start(1);
    let allow = vec![format!("127.0.0.1:{}", mock.port)];
    let app = TestApp::spawn(move |s| {
        s.security.master_key = Some(Secret::new(MASTER));
        s.security.endpoint_allowlist = allow;
        s.metrics.token = Some(Secret::new("metrics-scraper-token-0123456789"));
    })
    .await;
    let (alice, _) = user(&app, "alice", None, json!({})).await;
    let key = "sk-canary-9f8e7d6c5b4a39281706";
    let p =
        json!({"type": "openai", "endpoint": mock.base(), "api_key": key, "models": [{"name": "tenant-secret-model"}]});
    let r = call(&app, "PUT", "/api/me/providers/tenant-secret-name", &alice, Some(p)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    settle().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("Bearer {key}"));
    let echo = format!(
        r#"{{"error":{{"message":"Invalid key 9f8e7d6c5b4a (auth {b64}) ...a39281706 for org","type":"auth"}}}}"#
    );
    mock.plan(Plan { status: 500, error_body: Some(echo), ..Plan::default() });
    let r = post_json(
        &app.url("/v1/chat/completions"),
        &alice,
        &chat("user-provider/tenant-secret-name/tenant-secret-model", "hi"),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    let text = r.text();
    assert!(text.contains("Invalid key [redacted]"), "the upstream's message is kept, redacted: {text}");
    let b64_inner = &b64[4..b64.len() - 4];
    for form in [key, b64_inner] {
        let chars: Vec<char> = form.chars().collect();
        for w in chars.windows(8) {
            let w: String = w.iter().collect();
            assert!(!text.contains(&w), "`{w}` of the key reached the client: {text}");
        }
    }
    mock.heal();
    let r = post_json(
        &app.url("/v1/chat/completions"),
        &alice,
        &chat("user-provider/tenant-secret-name/tenant-secret-model", "hi"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    settle().await;
    send("GET", &app.url("/metrics"), &[], "").await.assert_error(401, "invalid_token");
    send("GET", &app.url("/metrics"), &[("authorization", "Bearer wrong-token-0123456789")], "")
        .await
        .assert_error(401, "invalid_token");
    let m =
        send("GET", &app.url("/metrics"), &[("authorization", "Bearer metrics-scraper-token-0123456789")], "").await;
    assert_eq!(m.status, 200);
    let m = m.text();
    assert!(m.contains(r#"provider="user""#) && m.contains(r#"route="user""#), "{m}");
    assert!(!m.contains("tenant-secret") && !m.contains("alice"), "tenant names in /metrics: {m}");
    app.stop().await;
}

/// Defect 9, TESTPLAN S11: wrong tokens from one client address, spread over three nodes,
/// are throttled cluster-wide (20 a minute answered 401, then 429 with `Retry-After`); with the
/// shared store gone, each node holds its share (≤ 1.1 × 20 in all); valid tokens from the same
/// address, and another address's requests, are unaffected. The address is what the trusted
/// proxy (nginx, here the loopback peer) puts in `X-Forwarded-For`.
#[actix_web::test]
async fn d9_s11_failed_authentications_are_throttled_per_address_across_nodes() {
    let mut redis = crate::support::services::PrivateRedis::start();
    let prefix = format!("{}:", crate::support::unique("s11"));
    let mut apps = Vec::new();
    for _ in 0..3 {
        let (url, prefix) = (redis.url.clone(), prefix.clone());
        apps.push(
            TestApp::spawn(move |s| {
                s.redis.url = Some(Secret::new(url));
                s.redis.key_prefix = prefix;
                // Long enough that no heartbeat lapses on a loaded machine (the Redis-down share
                // divides by the last live-node count).
                s.cluster.heartbeat_interval_ms = 500;
            })
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let attempt = |i: usize, ip: &str, token: &str| {
        let url = apps[i % 3].url("/v1/models");
        let (ip, auth) = (ip.to_owned(), format!("Bearer {token}"));
        async move { send("GET", &url, &[("authorization", &auth), ("x-forwarded-for", &ip)], "").await }
    };
    let wrong = |i: usize| format!("sy-{:0>48}", i);
    let run = |ip: &'static str| {
        let attempt = &attempt;
        async move {
            let (mut unauthorized, mut throttled) = (0, 0);
            for i in 0..60 {
                let r = attempt(i, ip, &wrong(i)).await;
                match r.status {
                    401 => unauthorized += 1,
                    429 => {
                        r.assert_error(429, "rate_limit_exceeded");
                        assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s > 60));
                        throttled += 1;
                    }
                    s => panic!("status {s}: {}", r.text()),
                }
            }
            (unauthorized, throttled)
        }
    };
    let (unauthorized, throttled) = run("203.0.113.7").await;
    assert_eq!((unauthorized, throttled), (20, 40), "cluster-wide, exactly the limit is answered 401");
    let admin = apps[0].admin_token.clone();
    for i in 0..3 {
        assert_eq!(attempt(i, "203.0.113.7", &admin).await.status, 200, "a valid token from the address");
        assert_eq!(attempt(i, "198.51.100.9", &wrong(1)).await.status, 401, "another address");
        assert_eq!(attempt(i, "198.51.100.9", &admin).await.status, 200);
    }
    // The shared store goes away: each node counts its share of the limit.
    redis.kill();
    let (unauthorized, _) = run("203.0.113.8").await;
    assert!((1..=22).contains(&unauthorized), "{unauthorized} failures answered 401 with Redis down");
    for i in 0..3 {
        assert_eq!(attempt(i, "203.0.113.8", &admin).await.status, 200);
    }
    for app in apps {
        app.stop().await;
    }
}

/// Defect 8: a tenant's stored objects are bounded (providers, models per provider, rotations,
/// autoselects, self-minted tokens), each bound answered with a clear 4xx that names the
/// setting, and writes through `/api/me/…` are rate limited.
#[actix_web::test]
async fn d8_tenant_objects_and_writes_are_bounded() {
    let mock = MockUpstream::start(1);
    let allow = vec![format!("127.0.0.1:{}", mock.port)];
    let app = TestApp::spawn(move |s| {
        s.security.endpoint_allowlist = allow;
        s.tenant_limits.max_providers = 2;
        s.tenant_limits.max_models_per_provider = 3;
        s.tenant_limits.max_rotations = 1;
        s.tenant_limits.max_autoselects = 1;
        s.tenant_limits.max_tokens = 3;
        s.tenant_limits.writes_per_minute = 12;
    })
    .await;
    let (alice, _) = user(&app, "alice", None, json!({})).await;
    let provider = |models: usize| {
        let models: Vec<Value> = (0..models).map(|i| json!({"name": format!("m{i}")})).collect();
        json!({"type": "openai", "endpoint": mock.base(), "models": models})
    };
    let put = |path: &str, body: Value| {
        let (app, alice, path) = (&app, alice.clone(), path.to_owned());
        async move { call(app, "PUT", &path, &alice, Some(body)).await }
    };
    // 1 write: a provider with too many models is refused (and counts as a write).
    let e = put("/api/me/providers/p0", provider(4)).await.assert_error(400, "invalid_request");
    assert!(e["error"]["message"].as_str().unwrap().contains("max_models_per_provider"), "{e}");
    // 2–4: two providers, and replacing one is not a new one.
    for name in ["p0", "p1", "p1"] {
        assert_eq!(put(&format!("/api/me/providers/{name}"), provider(3)).await.status, 200);
    }
    // 5: a third provider.
    let e = put("/api/me/providers/p2", provider(1)).await.assert_error(403, "permission_denied");
    assert!(e["error"]["message"].as_str().unwrap().contains("tenant_limits.max_providers"), "{e}");
    // 6–7, 8–9: one rotation, one autoselect.
    let rotation = json!({"strategy": "priority", "entries": [{"provider_id": "p0", "model": "m0"}]});
    assert_eq!(put("/api/me/rotations/r0", rotation.clone()).await.status, 200);
    put("/api/me/rotations/r1", rotation).await.assert_error(403, "permission_denied");
    let auto = json!({"available_models": [{"route": "user-provider/p0/m0"}]});
    assert_eq!(put("/api/me/autoselects/a0", auto.clone()).await.status, 200);
    put("/api/me/autoselects/a1", auto).await.assert_error(403, "permission_denied");
    // 10–12: the user's own token plus two minted reach the cap of 3.
    for _ in 0..2 {
        let r = call(&app, "POST", "/api/me/tokens", &alice, Some(json!({"routes": ["user-provider/*"]}))).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = call(&app, "POST", "/api/me/tokens", &alice, Some(json!({"routes": ["user-provider/*"]}))).await;
    r.assert_error(403, "permission_denied");
    // 13: over the write rate.
    let r = put("/api/me/providers/p0", provider(1)).await;
    r.assert_error(429, "rate_limit_exceeded");
    assert!(r.header("retry-after").is_some());
    // Reads are not writes.
    assert_eq!(call(&app, "GET", "/api/me/providers", &alice, None).await.status, 200);
    app.stop().await;
}

/// Sends a request head and then the body a byte a second; returns the status line's code and
/// the body of the answer (or 0 when the connection closed without one).
async fn trickle(port: u16, token: &str, client: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return (0, String::new()) };
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\nX-Forwarded-For: {client}\r\n\r\n{{"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if w.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if read.is_err() {
        return (0, text);
    }
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Defect 5: bodies trickled a byte a second are cut off with 408 once the grace has passed, and
/// one address holding many of them gets 429 beyond its cap at once, while another tenant and
/// `/health` are served normally.
#[actix_web::test]
async fn d5_trickled_bodies_time_out_and_one_address_cannot_hold_the_node() {
    let mock = MockUpstream::start(1);
    let base = mock.base();
    let app = TestApp::spawn(move |s| {
        s.providers.push(openai_provider("a", &base, &["m"]));
        s.server.max_requests_per_client = 16;
    })
    .await;
    let (slow, _) = user(&app, "slow", None, json!({})).await;
    let (other, _) = user(&app, "other", None, json!({})).await;
    settle().await;
    let started = std::time::Instant::now();
    let trickling = join_all((0..48).map(|_| trickle(app.port, &slow, "203.0.113.5")));
    let normal = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut ok = 0;
        for _ in 0..10 {
            let auth = format!("Bearer {other}");
            let r = send(
                "POST",
                &app.url("/v1/chat/completions"),
                &[("authorization", &auth), ("content-type", "application/json"), ("x-forwarded-for", "198.51.100.9")],
                chat("provider/a/m", "hi").to_string(),
            )
            .await;
            ok += usize::from(r.status == 200);
            assert_eq!(send("GET", &app.url("/health"), &[], "").await.status, 200);
        }
        ok
    };
    let (results, ok) = futures_util::join!(trickling, normal);
    assert_eq!(ok, 10, "another tenant was not served while one address trickled");
    let timed_out = results.iter().filter(|(s, _)| *s == 408).count();
    let refused = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((timed_out, refused), (16, 32), "{:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    for (status, body) in &results {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{status}: {body}"));
        assert!(v["error"]["code"] == "request_timeout" || v["error"]["code"] == "rate_limit_exceeded", "{v}");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "the trickled bodies were never cut off");
    assert_eq!(mock.calls(), 10);
    app.stop().await;
}

/// An upstream that reads a request and then says nothing (`chunks: None`), or sends a stream's
/// head and that many events and then nothing; it notes when the gateway closes each connection.
async fn stalling_upstream(chunks: Option<usize>) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&closed);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let mut answered = false;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) if chunks.is_some() && !answered => {
                            answered = true;
                            let mut out = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_owned();
                            for word in [" one", " two", " three"].iter().take(chunks.unwrap_or(0)) {
                                let ev = format!(
                                    "data: {}\n\n",
                                    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]})
                                );
                                out.push_str(&format!("{:x}\r\n{ev}\r\n", ev.len()));
                            }
                            let _ = s.write_all(out.as_bytes()).await;
                        }
                        Ok(_) => {}
                    }
                }
                seen.lock().unwrap().push(std::time::Instant::now());
            });
        }
    });
    (port, closed)
}

/// Defect 7, TESTPLAN F6 (CI form): a client that goes away while the upstream is still
/// thinking — a non-streaming request, a stream before its first event, and (as before) a stream
/// after two events — has its upstream connection closed within a second, and its record says
/// 499 `client_disconnected` with the prompt billed and the output relayed.
#[actix_web::test]
async fn d7_f6_a_client_leaving_before_the_first_byte_cancels_the_upstream() {
    use tokio::io::AsyncWriteExt as _;
    for (chunks, relayed) in [(None, 0), (Some(0), 0), (Some(2), 2)] {
        let stream = chunks.is_some();
        let (port, closed) = stalling_upstream(chunks).await;
        let app = TestApp::spawn(move |s| {
            s.providers.push(openai_provider("slow", &format!("http://127.0.0.1:{port}/v1"), &["m"]));
            s.upstream.first_byte_timeout_ms = 30_000;
            s.upstream.total_timeout_ms = 60_000;
        })
        .await;
        let (token, _) = user(&app, "leaver", None, json!({})).await;
        settle().await;
        let mut lags = Vec::new();
        for _ in 0..5 {
            let before = closed.lock().unwrap().len();
            let body = json!({"model": "provider/slow/m", "stream": stream,
                "messages": [{"role": "user", "content": "think about it for a while"}]})
            .to_string();
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(800)).await;
            drop(s);
            let left = std::time::Instant::now();
            let mut lag = None;
            for _ in 0..60 {
                if let Some(t) = closed.lock().unwrap().get(before) {
                    lag = Some(t.saturating_duration_since(left));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            lags.push(lag.unwrap_or_else(|| panic!("{chunks:?}: the upstream connection stayed open")));
        }
        assert!(lags.iter().all(|l| *l < Duration::from_secs(1)), "{chunks:?}: {lags:?}");
        // Each has one record: 499, the prompt billed, nothing relayed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let store = app.store().await;
        let rows = switchyard::store::query_usage(store.conn(), &Default::default(), 100).await.unwrap();
        let mine: Vec<_> = rows.iter().filter(|r| r.route == "provider/slow/m").collect();
        assert_eq!(mine.len(), 5, "{chunks:?}: {mine:?}");
        for r in mine {
            assert_eq!(
                (r.status, r.outcome.as_str(), r.completion_tokens),
                (499, "client_disconnected", relayed),
                "{r:?}"
            );
            assert!(r.prompt_tokens > 0);
        }
        app.stop().await;
    }
}

/// Writes `raw` to the node and reads its answer until the connection closes (or 10 s).
async fn raw_exchange(port: u16, raw: &[u8], hold: Duration) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    tokio::time::sleep(hold).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Defect 11: answers the HTTP codec gives before any handler — 400 for a `Content-Length`
/// with `Transfer-Encoding` or two `Content-Length`s, 431 for a head too large, 408 for a head
/// that did not arrive in time — carry the OpenAI error shape, not an empty body.
#[actix_web::test]
async fn d11_protocol_level_errors_have_the_error_shape() {
    let app = TestApp::spawn(|s| s.server.header_timeout_ms = 500).await;
    let post = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let cases = [
        (format!("{post}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{{}}"), 400, "invalid_request"),
        (format!("{post}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"), 400, "invalid_request"),
        (
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_owned() + &"a".repeat(300_000) + "\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        ("GET /health HTTP/1.1\r\nHost: x\r\n".to_owned(), 408, "request_timeout"),
        ("NOT-HTTP\r\n\r\n".to_owned(), 400, "invalid_request"),
    ];
    for (raw, status, code) in cases {
        let hold = if status == 408 { Duration::from_millis(900) } else { Duration::ZERO };
        let answer = raw_exchange(app.port, raw.as_bytes(), hold).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {answer:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{status}: not JSON: {body:?}"));
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
    }
    // A well-formed request on the same kind of connection is untouched.
    let answer =
        raw_exchange(app.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    app.stop().await;
}
