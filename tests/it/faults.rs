//! TESTPLAN §3.3 in single-node CI form (the cluster issue runs F1 across three nodes): F1 a 5xx
//! burst on one deployment, F2 429 with Retry-After, F3 timeouts and keepalives, F14 every
//! deployment failing. Durations are scaled down from the plan's minutes to seconds.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use switchyard::config::{RotationEntryConfig, Settings};

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{TestApp, chat, get, openai_provider, post_json, rotation, send};

fn entry(provider: &str, cooldown: u64) -> RotationEntryConfig {
    RotationEntryConfig { provider_id: provider.into(), model: "m".into(), weight: 1.0, error_cooldown: Some(cooldown) }
}

fn two_deployments(s: &mut Settings, a: &MockUpstream, b: &MockUpstream, strategy: &str, cooldown: u64) {
    s.providers.push(openai_provider("a", &a.base(), &["m"]));
    s.providers.push(openai_provider("b", &b.base(), &["m"]));
    let mut r = rotation("pair", strategy, vec![entry("a", cooldown), entry("b", cooldown)]);
    r.eject_after = Some(5);
    s.rotations.push(r);
}

async fn ask(app: &TestApp) -> crate::support::Resp {
    post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat("rotation/pair", "hi")).await
}

/// F1: A answers 503 while traffic runs; B serves everything; A is ejected after 5 consecutive
/// failures (cluster-wide streak), rests for its cooldown, and is back after it recovers; the
/// retry budget keeps upstream attempts ≤ 1.2 × client requests.
#[actix_web::test]
async fn f1_a_5xx_burst_ejects_after_five_failures_and_recovers() {
    let (a, b) = (MockUpstream::start(2), MockUpstream::start(2));
    let app = TestApp::spawn(|s| two_deployments(s, &a, &b, "weighted", 2)).await;
    a.plan(Plan { status: 503, times: 100_000, ..Plan::default() });

    // 300 requests, 3 at a time (about 100 requests/s), over a little more than one cooldown.
    // (More at once would meet the retry budget: at most max(20 % of requests in flight, 3)
    // failovers at a time.)
    let mut ok = 0;
    let mut a_before_first_ejection = None;
    for wave in 0..100 {
        let results = join_all((0..3).map(|_| ask(&app))).await;
        ok += results.iter().filter(|r| r.status == 200).count();
        for r in &results {
            assert!(
                r.status == 200 && r.header("x-switchyard-provider") == Some("b"),
                "wave {wave}: {} {}",
                r.status,
                r.text()
            );
        }
        if wave == 19 {
            a_before_first_ejection = Some(a.calls());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let requests = 300;
    assert!(ok * 1000 >= requests * 995, "{ok} of {requests} succeeded");
    // Ejected after 5 consecutive failures (plus those already in flight when the 5th failed).
    let first = a_before_first_ejection.unwrap();
    assert!((5..=5 + 3).contains(&first), "A saw {first} requests before its ejection");
    let attempts = a.calls() + b.calls();
    assert!(attempts * 10 <= requests * 12, "{attempts} upstream attempts for {requests} requests");

    // A heals; within its cooldown + 1 s it is back in rotation.
    a.heal();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let results = join_all((0..30).map(|_| ask(&app))).await;
    assert!(results.iter().all(|r| r.status == 200));
    let served_by_a = results.iter().filter(|r| r.header("x-switchyard-provider") == Some("a")).count();
    assert!(served_by_a > 0, "A never came back");
    app.stop().await;
}

/// F2: a 429 with `Retry-After: 3` keeps every request away from K1 for 3 s; a later 429 without
/// the header (a slower in-flight request) does not shorten that; when every key is rate limited
/// the client gets 429 with `retry-after`.
#[actix_web::test]
async fn f2_retry_after_keeps_the_key_out_and_never_shortens() {
    let (k1, k2) = (MockUpstream::start(2), MockUpstream::start(2));
    let app = TestApp::spawn(|s| two_deployments(s, &k1, &k2, "priority", 1)).await;
    // First call: slow and headerless; second: fast with Retry-After 3.
    k1.plan(Plan { status: 429, delay_headers_ms: 600, ..Plan::default() });
    k1.plan(Plan { status: 429, retry_after: Some(3), ..Plan::default() });
    let slow = ask(&app);
    let fast = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        (ask(&app).await, started)
    };
    let (slow, (fast, t0)) = futures_util::join!(slow, fast);
    assert_eq!((slow.status, fast.status), (200, 200), "both fail over to K2");
    assert_eq!(k1.calls(), 2);
    // Until 3 s after the Retry-After, nothing reaches K1, though its own cooldown is 1 s.
    while t0.elapsed() < Duration::from_millis(2_600) {
        let r = ask(&app).await;
        assert_eq!(r.header("x-switchyard-provider"), Some("b"));
        assert_eq!(k1.calls(), 2, "a request reached K1 {} ms after its Retry-After", t0.elapsed().as_millis());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = ask(&app).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("a"), "K1 is back after its Retry-After");

    // Every key rate limited: 429 in the OpenAI shape, with retry-after.
    k1.plan(Plan { status: 429, retry_after: Some(5), ..Plan::default() });
    k2.plan(Plan { status: 429, retry_after: Some(5), ..Plan::default() });
    let r = ask(&app).await;
    r.assert_error(429, "rate_limit_exceeded");
    // Both cooling now: still 429, not 503, and a retry-after to back off by; a rate-limited
    // key is never probed before its Retry-After.
    let calls = (k1.calls(), k2.calls());
    let r = ask(&app).await;
    assert_eq!((k1.calls(), k2.calls()), calls, "a rate-limited key was probed");
    r.assert_error(429, "rate_limit_exceeded");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&wait), "retry-after {wait}");
    app.stop().await;
}

/// F3: (a) headers that never come → 504 within the first-byte timeout + 1 s; (b) a stall
/// mid-stream → one error event within the idle timeout + 1 s, usage marked partial; (c) a
/// healthy upstream slow to its first token → `: keepalive` comments, then every token.
#[actix_web::test]
async fn f3_timeouts_end_within_their_deadlines_and_keepalives_hold_slow_streams() {
    let mock = MockUpstream::start(2);
    let app = TestApp::spawn(|s| {
        s.upstream.first_byte_timeout_ms = 3_000;
        s.upstream.idle_timeout_ms = 800;
        s.upstream.keepalive_interval_ms = 300;
        s.providers.push(openai_provider("m", &mock.base(), &["m"]));
    })
    .await;
    let url = app.url("/v1/chat/completions");
    let auth = format!("Bearer {}", app.admin_token);
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];

    mock.plan(Plan { delay_headers_ms: 10_000, ..Plan::default() });
    let started = Instant::now();
    let r = post_json(&url, &app.admin_token, &chat("m", "hi")).await;
    r.assert_error(504, "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(3_000 + 1_000), "took {:?}", started.elapsed());

    mock.plan(Plan { chunks: 20, hang_after: Some(10), ..Plan::default() });
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let r = send("POST", &url, &headers, body.to_string()).await;
    assert!(started.elapsed() < Duration::from_millis(800 + 1_000), "took {:?}", started.elapsed());
    let text = r.text();
    assert!(text.contains("upstream_timeout") && !text.contains("[DONE]"), "{text}");
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!(rec.outcome, "upstream_timeout");
    assert_eq!(rec.completion_tokens, 10, "output counted up to the stall");

    // Healthy but slow: 2 s to the first token, longer than the idle timeout (the first-byte
    // timeout governs until the first event).
    mock.plan(Plan { chunks: 4, first_chunk_delay_ms: 2_000, ..Plan::default() });
    let r = send("POST", &url, &headers, body.to_string()).await;
    let text = r.text();
    assert!(text.matches(": keepalive").count() >= 3, "{text}");
    assert!(text.contains(" three") && text.contains("[DONE]"), "{text}");
    app.stop().await;
}

/// F14: both deployments fail. The gateway keeps probing at most once per second per
/// deployment (never a permanent blackout), clients get 502/503 naming the upstream status but
/// not its URL, and service is back within cooldown + 1 s after the upstreams heal.
#[actix_web::test]
async fn f14_all_failing_probes_once_per_second_and_recovers() {
    let (a, b) = (MockUpstream::start(2), MockUpstream::start(2));
    let app = TestApp::spawn(|s| {
        two_deployments(s, &a, &b, "priority", 1);
        s.rotations[0].eject_after = None;
    })
    .await;
    a.plan(Plan { status: 500, times: 100_000, ..Plan::default() });
    b.plan(Plan { status: 500, times: 100_000, ..Plan::default() });
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    while started.elapsed() < Duration::from_millis(3_000) {
        let r = ask(&app).await;
        *statuses.entry(r.status).or_insert(0) += 1;
        let text = r.text();
        assert!(r.status == 502 || r.status == 503, "{} {text}", r.status);
        assert!(!text.contains("127.0.0.1") && !text.contains("http://"), "{text}");
        if r.status == 502 {
            assert!(text.contains("HTTP 500"), "{text}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    // The first failures, then at most one probe per second per deployment (+1 for edges).
    for (name, m) in [("a", &a), ("b", &b)] {
        let calls = m.calls();
        assert!(calls >= 2, "{name} was never probed ({calls} calls)");
        #[expect(clippy::as_conversions, reason = "a small count")]
        let bound = 1 + secs.ceil() as usize + 1;
        assert!(calls <= bound, "{name}: {calls} calls in {secs:.1} s: {statuses:?}");
    }
    assert!(statuses.get(&503).copied().unwrap_or(0) > 10, "{statuses:?}");

    a.heal();
    b.heal();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let r = ask(&app).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The routing status shows no cooldown left once healthy traffic flows.
    let _ = get(&app.url("/health/routing"), &app.admin_token).await;
    app.stop().await;
}

/// Every failure kind moves on to the next candidate and is named in the receipt: connect error,
/// timeout before the first byte, 5xx, 429, and malformed replies (JSON and SSE).
#[actix_web::test]
async fn every_failure_kind_fails_over() {
    let (a, b) = (MockUpstream::start(2), MockUpstream::start(2));
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = TestApp::spawn(|s| {
        s.upstream.first_byte_timeout_ms = 500;
        s.providers.push(openai_provider("dead", &format!("http://127.0.0.1:{dead}/v1"), &["m"]));
        s.providers.push(openai_provider("a", &a.base(), &["m"]));
        s.providers.push(openai_provider("b", &b.base(), &["m"]));
        s.rotations.push(rotation("gone", "priority", vec![entry("dead", 1), entry("b", 1)]));
        s.rotations.push(rotation("pair", "priority", vec![entry("a", 0), entry("b", 0)]));
    })
    .await;
    let r = post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat("rotation/gone", "hi")).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("b")), "{}", r.text());
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    let receipt: serde_json::Value = serde_json::from_str(rec.routing.as_deref().unwrap()).unwrap();
    assert_eq!(receipt["candidates"][0]["failure"], "connect", "{receipt}");

    use crate::support::mock_upstream::BadBody;
    let cases = [
        (Plan { delay_headers_ms: 3_000, ..Plan::default() }, false, "timeout"),
        (Plan { status: 502, ..Plan::default() }, false, "status_5xx"),
        (Plan { status: 429, ..Plan::default() }, false, "rate_limited"),
        (Plan { bad_body: Some(BadBody::Truncated), ..Plan::default() }, false, "protocol"),
        (Plan { bad_body: Some(BadBody::Html), ..Plan::default() }, false, "protocol"),
        (Plan { bad_body: Some(BadBody::WrongContentType), ..Plan::default() }, true, "protocol"),
    ];
    for (plan, stream, kind) in cases {
        a.plan(plan);
        let body = serde_json::json!({"model": "rotation/pair", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]});
        let r = post_json(&app.url("/v1/chat/completions"), &app.admin_token, &body).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(r.header("x-switchyard-provider"), Some("b"), "{kind}");
        assert_eq!(r.header("x-switchyard-reason"), Some("failover_after_error"), "{kind}");
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        let receipt: serde_json::Value = serde_json::from_str(rec.routing.as_deref().unwrap()).unwrap();
        assert_eq!(receipt["candidates"][0]["failure"], kind, "{receipt}");
    }
    app.stop().await;
}
