//! Traces (SPEC §8) as a collector receives them over OTLP/gRPC: a server span per request
//! continued from the client's `traceparent`, a routing span, one client span per upstream
//! attempt with the GenAI attributes (the failed one with `error.type`), the attempt's context
//! sent upstream, a stream's spans lasting to its last byte, export whatever the log level, and
//! an unreachable collector that changes nothing for clients.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::node::{Node, spans};
use crate::support::{get, send, service_url};

const SERVER: i64 = 2;
const CLIENT: i64 = 3;

fn config(service: &str, endpoint: &str, upstreams: &[(&str, &MockUpstream)], extra: &str) -> String {
    let mut c = format!(
        "[log]\nlevel = \"info\"\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"{service}\"\nsample_ratio = 1.0\n{extra}\n"
    );
    for (id, m) in upstreams {
        c.push_str(&format!(
            "[[providers]]\nid = \"{id}\"\ntype = \"openai\"\nendpoint = \"{}\"\nmodels = [{{ name = \"m\" }}]\n",
            m.base()
        ));
    }
    c
}

fn service() -> String {
    format!("sy-test-{}", uuid::Uuid::now_v7().simple())
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn find(all: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    all.iter().filter(|s| pred(s)).collect()
}

async fn chat(node: &Node, body: Value, traceparent: Option<&str>) -> crate::support::Resp {
    let auth = format!("Bearer {}", node.admin);
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
    }
    send("POST", &node.url("/v1/chat/completions"), &headers, body.to_string()).await
}

/// A rotation's failover: server → routing → two attempts (the failed one with `error.type`),
/// the client's trace continued, each attempt's own context sent to its upstream, the log line of
/// the failure carrying the request id and the trace id — all at `RUST_LOG=warn`.
#[actix_web::test]
async fn failover_span_tree_and_trace_context() {
    let (a, b) = (MockUpstream::start(1), MockUpstream::start(1));
    a.plan(Plan { status: 503, ..Plan::default() });
    let svc = service();
    let rotation = "[[rotations]]\nname = \"r\"\nstrategy = \"priority\"\nentries = [{ provider_id = \"a\", model = \"m\" }, { provider_id = \"b\", model = \"m\" }]\n";
    let mut cfg = config(&svc, &service_url("SWITCHYARD_TEST_OTLP_GRPC"), &[("a", &a), ("b", &b)], "");
    cfg.push_str(rotation);
    let node = Node::spawn(&cfg, &[("RUST_LOG", "warn")]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{client_span}-01");
    let r = chat(&node, json!({"model": "rotation/r", "messages": [{"role": "user", "content": "hello"}]}), Some(&tp))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    let request_id = r.header("x-request-id").unwrap().to_owned();
    let logs = node.stop();

    let all = spans(&svc).await;
    let server = find(&all, |s| s["kind"] == SERVER);
    assert_eq!(server.len(), 1, "{all:#?}");
    let server = server[0];
    assert_eq!(server["name"], "POST /v1/chat/completions");
    assert_eq!(server["trace_id"], trace, "the client's trace was not continued");
    assert_eq!(server["parent_span_id"], client_span);
    assert_eq!(attr(server, "switchyard.request_id"), &json!(request_id));
    assert_eq!(attr(server, "http.response.status_code"), &json!(200));
    assert_eq!(attr(server, "http.route"), &json!("/v1/chat/completions"));
    assert!(attr(server, "switchyard.user_id").is_i64() && attr(server, "switchyard.node").is_string(), "{server}");

    let routing = find(&all, |s| s["name"] == "route");
    assert_eq!(routing.len(), 1, "{all:#?}");
    let routing = routing[0];
    assert_eq!(routing["parent_span_id"], server["span_id"]);
    assert_eq!(attr(routing, "switchyard.route"), &json!("rotation/r"));
    assert_eq!(attr(routing, "switchyard.strategy"), &json!("priority"));
    assert_eq!(attr(routing, "switchyard.candidates"), &json!("provider/a/m,provider/b/m"));
    assert_eq!(attr(routing, "switchyard.reason"), &json!("failover_after_error"));

    let mut attempts = find(&all, |s| s["kind"] == CLIENT);
    attempts.sort_by_key(|s| s["attributes"]["switchyard.attempt"].as_i64());
    assert_eq!(attempts.len(), 2, "{all:#?}");
    for s in &attempts {
        assert_eq!(s["parent_span_id"], routing["span_id"]);
        assert_eq!(s["trace_id"], trace);
        assert_eq!(s["name"], "chat m");
        assert_eq!(attr(s, "gen_ai.operation.name"), &json!("chat"));
        assert_eq!(attr(s, "gen_ai.provider.name"), &json!("openai"));
        assert_eq!(attr(s, "gen_ai.request.model"), &json!("m"));
    }
    let (failed, ok) = (attempts[0], attempts[1]);
    assert_eq!(attr(failed, "switchyard.provider"), &json!("a"));
    assert_eq!(attr(failed, "error.type"), &json!("status_5xx"));
    assert_eq!(attr(failed, "http.response.status_code"), &json!(503));
    assert_eq!(failed["status"], 2, "the failed attempt's status is an error");
    assert_eq!(attr(ok, "switchyard.provider"), &json!("b"));
    assert!(attr(ok, "error.type").is_null(), "{ok}");
    assert!(attr(ok, "gen_ai.response.id").as_str().is_some_and(|i| i.starts_with("chatcmpl")), "{ok}");
    assert_eq!(attr(ok, "gen_ai.response.finish_reasons"), &json!(["stop"]));
    assert!(attr(ok, "gen_ai.usage.input_tokens").as_i64().is_some_and(|n| n > 0), "{ok}");
    assert!(attr(ok, "gen_ai.usage.output_tokens").as_i64().is_some_and(|n| n > 0), "{ok}");
    assert!(attr(ok, "gen_ai.response.model").is_string(), "{ok}");

    // Each upstream saw the context of its own attempt.
    for (mock, span) in [(&a, failed), (&b, ok)] {
        let got = mock.received()[0].header("traceparent").map(str::to_owned);
        let want = format!("00-{trace}-{}-01", span["span_id"].as_str().unwrap());
        assert_eq!(got.as_deref(), Some(want.as_str()));
        assert_eq!(mock.received()[0].header("tracestate"), None, "an empty tracestate was sent");
    }
    // The failed attempt's log line (a warning: the level the node runs at) carries the request
    // id and the trace id.
    let line = logs.lines().find(|l| l.contains("Upstream attempt failed")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains(&request_id) && line.contains(trace), "{line}");
}

/// A streamed answer's attempt span (and the server span) end after the stream's last chunk, not
/// when its headers left.
#[actix_web::test]
async fn streaming_spans_last_until_the_last_chunk() {
    let up = MockUpstream::start(1);
    up.plan(Plan { chunks: 6, chunk_interval_ms: 100, ..Plan::default() });
    let svc = service();
    let node = Node::spawn(&config(&svc, &service_url("SWITCHYARD_TEST_OTLP_GRPC"), &[("up", &up)], ""), &[]);
    let started = std::time::SystemTime::now();
    let r =
        chat(&node, json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}), None).await;
    let last_byte = std::time::SystemTime::now();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("[DONE]"));
    node.stop();
    let all = spans(&svc).await;
    let ns =
        |t: std::time::SystemTime| i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    let attempt = find(&all, |s| s["kind"] == CLIENT);
    let server = find(&all, |s| s["kind"] == SERVER);
    assert_eq!((attempt.len(), server.len()), (1, 1), "{all:#?}");
    for s in [attempt[0], server[0]] {
        let (start, end) = (s["start"].as_i64().unwrap(), s["end"].as_i64().unwrap());
        assert!(start >= ns(started) - 1_000_000, "{s}");
        // Six chunks 100 ms apart: the span covers at least half a second, and it ended with the
        // stream (the client had its last byte within a few milliseconds of the span's end).
        assert!(end - start >= 500_000_000, "the span ended before the stream did: {s}");
        assert!(end <= ns(last_byte) + 50_000_000, "{s}");
    }
    assert_eq!(attr(attempt[0], "switchyard.stream"), &json!(true));
    assert!(attr(attempt[0], "gen_ai.usage.output_tokens").as_i64().is_some_and(|n| n > 0), "{}", attempt[0]);
}

/// A collector that cannot be reached changes nothing for clients: every request is answered, and
/// the spans that could not go out are counted in `/metrics`.
#[actix_web::test]
async fn an_unreachable_collector_changes_nothing_for_clients() {
    let up = MockUpstream::start(1);
    up.stop_recording();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let svc = service();
    let cfg =
        config(&svc, &format!("http://127.0.0.1:{closed}"), &[("up", &up)], "max_queue = 4\nexport_timeout_ms = 200");
    let node = Node::spawn(&cfg, &[]);
    for _ in 0..40 {
        let r = chat(&node, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let metrics = get(&node.url("/metrics"), &node.admin).await.text();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_trace_spans_total{fate=\"dropped\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "no dropped spans counted:\n{metrics}");
    node.stop();
}

/// With `telemetry.capture_content`, the attempt span carries the prompt and the answer; without
/// it (every other test, and S8 in `secrets.rs`), neither.
#[actix_web::test]
async fn content_is_captured_only_when_asked() {
    let up = MockUpstream::start(1);
    let svc = service();
    let node = Node::spawn(
        &config(&svc, &service_url("SWITCHYARD_TEST_OTLP_GRPC"), &[("up", &up)], "capture_content = true"),
        &[],
    );
    let r =
        chat(&node, json!({"model": "m", "messages": [{"role": "user", "content": "the secret plan"}]}), None).await;
    assert_eq!(r.status, 200);
    node.stop();
    let all = spans(&svc).await;
    let attempt = find(&all, |s| s["kind"] == CLIENT);
    assert_eq!(attempt.len(), 1, "{all:#?}");
    assert!(attr(attempt[0], "gen_ai.input.messages").as_str().is_some_and(|t| t.contains("the secret plan")));
    assert!(attr(attempt[0], "gen_ai.output.messages").as_str().is_some_and(|t| t.contains("Hello from the mock")));
}

/// Sampling is decided once, at the server span: at `sample_ratio = 0` a new trace exports no
/// span at all (no routing or attempt span turns up as a root of its own), yet its upstreams get
/// a `traceparent` in its trace with flags `00` and its log lines carry that trace id; a client's
/// unsampled trace is continued unsampled (its `tracestate` passed on); a client's sampled trace
/// is exported whatever the ratio.
#[actix_web::test]
async fn sampling_is_decided_once_per_request() {
    let (a, b) = (MockUpstream::start(1), MockUpstream::start(1));
    a.plan(Plan { status: 503, ..Plan::default() });
    let svc = service();
    let rotation = "[[rotations]]\nname = \"r\"\nstrategy = \"priority\"\nentries = [{ provider_id = \"a\", model = \"m\" }, { provider_id = \"b\", model = \"m\" }]\n";
    let mut cfg = config(&svc, &service_url("SWITCHYARD_TEST_OTLP_GRPC"), &[("a", &a), ("b", &b)], "")
        .replace("sample_ratio = 1.0", "sample_ratio = 0.0");
    cfg.push_str(rotation);
    let node = Node::spawn(&cfg, &[("RUST_LOG", "warn")]);
    let body = json!({"model": "rotation/r", "messages": [{"role": "user", "content": "hello"}]});

    // A new trace, not sampled: both attempts carry the same unsampled trace.
    let r = chat(&node, body.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let request_id = r.header("x-request-id").unwrap().to_owned();
    let parent =
        |m: &MockUpstream, i: usize| m.received()[i].header("traceparent").map(str::to_owned).unwrap_or_default();
    let (pa, pb) = (parent(&a, 0), parent(&b, 0));
    let parts: Vec<&str> = pb.split('-').collect();
    assert!(parts.len() == 4 && parts[0] == "00" && parts[1].len() == 32 && parts[2].len() == 16, "{pb}");
    assert_eq!(parts[3], "00", "an unsampled trace was sent as sampled: {pb}");
    assert_ne!(parts[1], "0".repeat(32));
    assert_eq!(pa, pb, "the attempts of one unsampled request are in one trace");
    let new_trace = parts[1].to_owned();

    // The client's unsampled trace: continued, unsampled, with its tracestate.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{client_trace}-00f067aa0ba902b7-00");
    let auth = format!("Bearer {}", node.admin);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("traceparent", tp.as_str()),
        ("tracestate", "vendor=abc"),
    ];
    let r = send("POST", &node.url("/v1/chat/completions"), &headers, body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = parent(&b, 1);
    assert!(got.starts_with(&format!("00-{client_trace}-")) && got.ends_with("-00"), "{got}");
    assert!(!got.contains("00f067aa0ba902b7"), "the client's span id was passed on as the gateway's: {got}");
    assert_eq!(b.received()[1].header("tracestate"), Some("vendor=abc"));

    // The client's sampled trace: exported at ratio 0.
    let sampled = "0af7651916cd43dd8448eb211c80319c";
    let r = chat(&node, body.clone(), Some(&format!("00-{sampled}-b7ad6b7169203331-01"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = node.stop();

    let all = spans(&svc).await;
    assert!(all.iter().all(|s| s["trace_id"] == sampled), "an unsampled request exported spans: {all:#?}");
    assert_eq!(find(&all, |s| s["kind"] == SERVER).len(), 1, "{all:#?}");
    assert_eq!(find(&all, |s| s["name"] == "route").len(), 1, "{all:#?}");
    // `a` is cooling down by then: one attempt.
    assert_eq!(find(&all, |s| s["kind"] == CLIENT).len(), 1, "{all:#?}");
    // The unsampled request's warning carries its request id and its trace id.
    let line = logs
        .lines()
        .find(|l| l.contains("Upstream attempt failed") && l.contains(&request_id))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains(&new_trace), "{line}");
}

/// Spans go out while the node runs, within the batch delay (half a second) of the request — not
/// only when it flushes at shutdown — and `/metrics` counts them.
#[actix_web::test]
async fn spans_are_exported_while_the_node_runs() {
    let up = MockUpstream::start(1);
    let svc = service();
    let node = Node::spawn(&config(&svc, &service_url("SWITCHYARD_TEST_OTLP_GRPC"), &[("up", &up)], ""), &[]);
    let r = chat(&node, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    while std::time::Instant::now() < deadline {
        all = spans(&svc).await;
        if all.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all.len(), 3, "server, routing and attempt spans, before shutdown: {all:#?}");
    let metrics = get(&node.url("/metrics"), &node.admin).await.text();
    assert!(metrics.contains("switchyard_trace_spans_total{fate=\"exported\"} 3"), "{metrics}");
    node.stop();
}

/// The response cache in the trace: the routing span says `switchyard.cache` (`miss`, then
/// `hit`); a hit's routing span names the original target with reason `cache_hit` and has no
/// attempt under it.
#[actix_web::test]
async fn a_cache_hit_is_a_routing_span_without_attempts() {
    let up = MockUpstream::start(1);
    let svc = service();
    let cfg = config(&svc, &service_url("SWITCHYARD_TEST_OTLP_GRPC"), &[("up", &up)], "[cache]\nenabled = true\n");
    let node = Node::spawn(&cfg, &[]);
    let body = json!({"model": "provider/up/m", "messages": [{"role": "user", "content": "cached"}]});
    for want in ["miss", "hit"] {
        let r = chat(&node, body.clone(), None).await;
        assert_eq!((r.status, r.header("x-switchyard-cache")), (200, Some(want)), "{}", r.text());
    }
    node.stop();
    let all = spans(&svc).await;
    let routing = find(&all, |s| s["name"] == "route");
    assert_eq!(routing.len(), 2, "{all:#?}");
    let (miss, hit) = match routing.iter().find(|s| attr(s, "switchyard.cache") == &json!("hit")) {
        Some(hit) => (routing.iter().find(|s| attr(s, "switchyard.cache") == &json!("miss")).unwrap(), *hit),
        None => panic!("no hit span: {routing:#?}"),
    };
    assert_eq!(attr(hit, "switchyard.reason"), &json!("cache_hit"));
    assert_eq!(attr(hit, "switchyard.route"), &json!("provider/up/m"));
    assert_eq!(attr(hit, "switchyard.target"), &json!("provider/up/m"));
    let attempts = find(&all, |s| s["kind"] == CLIENT);
    assert_eq!(attempts.len(), 1, "only the miss reached the upstream: {all:#?}");
    assert_eq!(attempts[0]["parent_span_id"], miss["span_id"]);
    assert_eq!(up.calls(), 1);
}
