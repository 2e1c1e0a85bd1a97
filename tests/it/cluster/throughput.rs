//! L1 and L2 through nginx in front of three nodes: sustained requests and sustained streams.

use std::time::{Duration, Instant};

use serde_json::json;

use super::load::{self, Outcome};
use super::{Cluster, Options, percentile_ms, provider_toml, secs, serial};
use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{fresh_database, service_url};

/// Twenty users over three tiers, each with a token.
async fn tenants(cluster: &Cluster) -> Vec<String> {
    for (tier, rpm) in [("bronze", 100_000), ("silver", 200_000), ("gold", 400_000)] {
        let r = cluster.admin("PUT", &format!("/tiers/{tier}"), &json!({"rpm": rpm, "max_concurrency": 1000})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut tokens = Vec::new();
    for i in 0..20 {
        let tier = ["bronze", "silver", "gold"][i % 3];
        let (t, _) = cluster.user(&format!("user{i}"), Some(tier), json!({})).await;
        tokens.push(t);
    }
    tokens
}

/// L1 (CI form): non-streaming chat completions through nginx at a fixed 300 requests/s.
#[actix_web::test]
async fn l1_sustained_requests_through_nginx_all_succeed_and_are_recorded() {
    let _serial = serial().await;
    let mock = MockUpstream::start(2);
    mock.stop_recording();
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let cluster = Cluster::start(Options::new(db, provider_toml("mock", &mock.base(), &["m"], ""))).await;
    let tokens = tenants(&cluster).await;
    let client = load::client();
    let url = cluster.url("/v1/chat/completions");
    let (rate, duration) = (300.0, secs(60, 600));
    let body = crate::support::chat("m", "Say something short.");
    let started = Instant::now();
    let outcomes = load::fixed_rate(rate, duration, |i, _| {
        load::request(client.clone(), url.clone(), tokens[i % tokens.len()].clone(), body.clone())
    })
    .await;
    let elapsed = started.elapsed();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    println!(
        "L1: {} requests in {:.1} s ({:.0}/s), {} not 2xx; latency through nginx p50 {:.2} ms, p99 {:.2} ms",
        outcomes.len(),
        elapsed.as_secs_f64(),
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        failed.len(),
        percentile_ms(&mut latencies, 50.0),
        percentile_ms(&mut latencies, 99.0),
    );
    assert!(failed.is_empty(), "{} of {} failed, e.g. {:?}", failed.len(), outcomes.len(), failed.first());
    // Exactly one usage record per request.
    let ids: Vec<String> = outcomes.iter().filter_map(|o| o.request_id.clone()).collect();
    assert_eq!(ids.len(), outcomes.len());
    let missing = cluster.await_usage(&ids, Duration::from_secs(30)).await;
    assert!(missing.is_empty(), "{} requests without a usage record", missing.len());
    let counts = super::usage_counts(&cluster.store().await).await;
    assert_eq!(counts.len(), ids.len(), "records for requests that were not sent");
    assert!(counts.values().all(|n| *n == 1));
    // Spread over the three nodes.
    let store = cluster.store().await;
    let rows = switchyard::store::query_usage(store.conn(), &Default::default(), 1_000_000).await.unwrap();
    let nodes: std::collections::BTreeSet<String> = rows.iter().map(|r| r.node.clone()).collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
}

/// The events the mock sends for one stream of `chunks` chunks (usage asked for).
fn expected_events(model: &str, chunks: usize) -> Vec<String> {
    let words = crate::support::mock_upstream::WORDS;
    let mut out = Vec::new();
    for i in 0..chunks {
        let word = words.get(i).copied().unwrap_or(" more");
        let delta = if i == 0 { json!({"role":"assistant","content":word}) } else { json!({"content":word}) };
        out.push(
            json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":model,
            "choices":[{"index":0,"delta":delta,"finish_reason":null}]})
            .to_string(),
        );
    }
    out.push(
        json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":model,
        "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})
        .to_string(),
    );
    out.push(
        json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":model,
        "choices":[],"usage":{"prompt_tokens":9,"completion_tokens":chunks,"total_tokens":9 + chunks}})
        .to_string(),
    );
    out.push("[DONE]".into());
    out
}

/// L2 (CI form): 200 concurrent SSE streams of 200 chunks at 25 ms, restarted as they finish.
#[actix_web::test]
async fn l2_sustained_streams_are_relayed_byte_exact_without_buffering() {
    let _serial = serial().await;
    let mock = MockUpstream::start(2);
    mock.stop_recording();
    let (chunks, interval_ms) = (200usize, 25u64);
    mock.plan(Plan { times: usize::MAX, chunks, chunk_interval_ms: interval_ms, ..Plan::default() });
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let cluster = Cluster::start(Options::new(db, provider_toml("mock", &mock.base(), &["m"], ""))).await;
    let tokens = tenants(&cluster).await;
    let client = load::client();
    let url = cluster.url("/v1/chat/completions");
    let duration = secs(60, 600);
    let deadline = Instant::now() + duration;
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Count."}]});
    let mut workers = Vec::new();
    for w in 0..200usize {
        let (client, url, token, body) = (client.clone(), url.clone(), tokens[w % tokens.len()].clone(), body.clone());
        workers.push(actix_web::rt::spawn(async move {
            let mut done = Vec::new();
            // Staggered starts, as clients would arrive.
            tokio::time::sleep(Duration::from_millis((w as u64 * 25) % 5_000)).await;
            while Instant::now() < deadline {
                done.push(load::request(client.clone(), url.clone(), token.clone(), body.clone()).await);
            }
            done
        }));
    }
    let mut streams: Vec<Outcome> = Vec::new();
    for w in workers {
        streams.extend(w.await.unwrap());
    }
    let expected = expected_events("m", chunks);
    let mut bad = Vec::new();
    let (mut ttfb, mut added_gap) = (Vec::new(), Vec::new());
    for s in &streams {
        let got: Vec<&str> = s.events.iter().map(|(d, _)| d.as_str()).collect();
        if !s.ok() || got != expected.iter().map(String::as_str).collect::<Vec<_>>() {
            bad.push(s);
            continue;
        }
        ttfb.push(s.ttfb);
        for pair in s.events[..chunks].windows(2) {
            let gap = pair[1].1.saturating_sub(pair[0].1);
            added_gap.push(gap.saturating_sub(Duration::from_millis(interval_ms)));
        }
        // Unbuffered: the chunks arrive spread over the stream's life, not at its end.
        let spread = s.events[chunks - 1].1.saturating_sub(s.events[0].1);
        assert!(spread >= Duration::from_millis(interval_ms * chunks as u64 / 2), "buffered: {spread:?}");
    }
    println!(
        "L2: {} streams ({} events each), {} not byte-exact; time to first byte p50 {:.1} ms, p99 {:.1} ms; \
         added inter-chunk delay p50 {:.2} ms, p99 {:.2} ms",
        streams.len(),
        expected.len(),
        bad.len(),
        percentile_ms(&mut ttfb, 50.0),
        percentile_ms(&mut ttfb, 99.0),
        percentile_ms(&mut added_gap, 50.0),
        percentile_ms(&mut added_gap, 99.0),
    );
    assert!(streams.len() >= 400, "too few streams ran: {}", streams.len());
    assert!(bad.is_empty(), "{} streams lost, duplicated or reordered events, e.g. {:?}", bad.len(), bad.first());
    // One usage record per stream, with the tokens the upstream reported.
    let ids: Vec<String> = streams.iter().filter_map(|o| o.request_id.clone()).collect();
    let missing = cluster.await_usage(&ids, Duration::from_secs(30)).await;
    assert!(missing.is_empty(), "{} streams without a usage record", missing.len());
    let store = cluster.store().await;
    let rows = switchyard::store::query_usage(store.conn(), &Default::default(), 1_000_000).await.unwrap();
    assert_eq!(rows.len(), ids.len());
    for r in &rows {
        assert_eq!((r.prompt_tokens, r.completion_tokens, r.usage_source.as_str()), (9, 200, "reported"), "{r:?}");
    }
}
