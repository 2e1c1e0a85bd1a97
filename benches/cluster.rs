//! Cluster benchmark: nginx (the shipped `nginx/nginx.conf`) in front of three release nodes on
//! a Postgres and a Redis of their own, against the mock upstream directly.
//!
//! Run with `cargo bench --bench cluster` (PostgreSQL, Redis and nginx installed, as
//! `tests/run.sh` does). It prints: the highest requests/s through nginx; p50 and p99 at a fixed
//! rate, direct and through the cluster, and the difference (the added latency); the same with
//! one node killed (SIGKILL) half-way; how long a cooldown set by one node and a revocation made
//! on one node take to reach the others; and, over the whole run, the count of requests that
//! reached the upstream without a usage record (lost) or with more than one (duplicated).
//! Environment: `BENCH_SECS` (default 10) per measurement, `BENCH_RATE` (default 1000).
#![allow(
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::panic,
    clippy::allow_attributes,
    reason = "benchmark binary"
)]

#[path = "support/load.rs"]
mod load;
#[path = "../tests/it/support/mock_upstream.rs"]
mod mock_upstream;
#[path = "../tests/it/support/services.rs"]
mod services;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use load::{Target, fixed_rate_at, max_rate, median, pct};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ADMIN: &str = "sy-bench-cluster-admin-token-0123456789abcdefghijklmnopqrstuvwxyz";

struct Node {
    name: String,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let out = self.dir.join(format!("{}.out", self.name));
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .current_dir(&self.dir)
            .args(["--config", &format!("{}.toml", self.name), "serve"])
            .env("SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN", ADMIN)
            .env_remove("SWITCHYARD_CONFIG")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..3000 {
            if std::fs::read_to_string(&out).unwrap_or_default().contains("Switchyard listening on") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} did not start", self.name);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// One request on its own connection; returns the status and the body.
async fn one(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (secs, rate) = if full { (env("BENCH_SECS", 10), env("BENCH_RATE", 1_000)) } else { (1, 100) };
    let rounds = if full { 3 } else { 1 };

    let pg = services::PrivatePostgres::start();
    let redis = services::PrivateRedis::start();
    // The mocks (A serves the direct and provider routes; A and B the rotation) on their own
    // actix system thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let a = mock_upstream::MockUpstream::start(1);
            let b = mock_upstream::MockUpstream::start(1);
            tx.send((a.port, a.base(), b.base(), std::sync::Arc::new((a, b)))).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let (a_port, a_base, b_base, mocks) = rx.recv().unwrap();
    let (a, b) = (&mocks.0, &mocks.1);

    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let name = format!("n{i}");
            let port = services::free_port();
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!(
                    "[server]\nport = {port}\nnode_id = \"{name}\"\n[database]\nurl = \"{db}\"\n\
                     [redis]\nurl = \"{redis}\"\n[cluster]\nheartbeat_interval_ms = 500\n[log]\nlevel = \"error\"\n\
                     [[providers]]\nid = \"a\"\ntype = \"openai\"\nendpoint = \"{a_base}\"\nmodels = [{{ name = \"qwen\" }}]\n\
                     [[providers]]\nid = \"b\"\ntype = \"openai\"\nendpoint = \"{b_base}\"\nmodels = [{{ name = \"qwen-b\" }}]\n\
                     [[rotations]]\nname = \"r\"\nstrategy = \"weighted\"\neject_after = 1\nentries = [\n\
                     {{ provider_id = \"a\", model = \"qwen\", weight = 1, error_cooldown = 60 }},\n\
                     {{ provider_id = \"b\", model = \"qwen-b\", weight = 1, error_cooldown = 60 }},\n]\n",
                    db = pg.url,
                    redis = redis.url,
                ),
            )
            .unwrap();
            Node { name, port, dir: dir.path().to_owned(), child: None }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let nginx = services::Nginx::start(&nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let (status, body) = one(nginx.port, "POST", "/admin/api/users", ADMIN, r#"{"username":"bench"}"#).await;
        assert!(status == 201 || status == 200, "{status} {body}");
        let (status, body) = one(nginx.port, "POST", "/admin/api/tokens", ADMIN, r#"{"user":"bench"}"#).await;
        assert_eq!(status, 201, "{body}");
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        let token = token["token"].as_str().unwrap().to_owned();
        let direct = Target { name: "direct", port: a_port, path: "/v1/chat/completions".into(), auth: None, model: "qwen" };
        let cluster = Target {
            name: "cluster",
            port: nginx.port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "qwen",
        };
        for t in [&direct, &cluster] {
            max_rate(t, 1).await;
        }
        println!("Switchyard cluster benchmark: nginx + 3 nodes (Postgres, Redis), {secs} s per measurement.\n");
        if !full {
            println!("(smoke run under cargo test: figures are not meaningful; use cargo bench)\n");
        }
        let direct_max = max_rate(&direct, secs).await;
        let cluster_max = max_rate(&cluster, secs).await;
        let (dr, cr) = (
            direct_max.ok as f64 / direct_max.elapsed.as_secs_f64(),
            cluster_max.ok as f64 / cluster_max.elapsed.as_secs_f64(),
        );
        println!("max throughput: direct {dr:.0} req/s; through nginx + 3 nodes {cr:.0} req/s ({} errors)", cluster_max.errors);

        let mut lat: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds {
            for (k, t) in [&direct, &cluster].into_iter().enumerate() {
                let o = fixed_rate_at(t, secs, false, rate).await;
                let (p50, p99) = (pct(&o.latencies_us, 0.50), pct(&o.latencies_us, 0.99));
                println!(
                    "round {round} at {rate} req/s {:<8} p50 {p50:>7.3} ms  p99 {p99:>7.3} ms  ({} ok, {} errors)",
                    t.name, o.ok, o.errors
                );
                lat[2 * k].push(p50);
                lat[2 * k + 1].push(p99);
            }
        }
        let m = lat.map(median);
        println!(
            "added latency through nginx + 3 nodes at {rate} req/s (median of {rounds}): p50 {:+.3} ms, p99 {:+.3} ms\n",
            m[2] - m[0],
            m[3] - m[1]
        );

        // One node killed half-way through a fixed-rate run.
        let victim = nodes[1].child.take().unwrap();
        let killer = std::thread::spawn(move || {
            let mut victim = victim;
            std::thread::sleep(Duration::from_millis(secs * 500));
            let _ = victim.kill();
            let _ = victim.wait();
        });
        let o = fixed_rate_at(&cluster, secs, false, rate).await;
        killer.join().unwrap();
        println!(
            "n2 killed (SIGKILL) half-way, at {rate} req/s: {} ok, {} failed ({:.3} %), p50 {:.3} ms, p99 {:.3} ms, \
             {:.0} req/s served",
            o.ok,
            o.errors,
            o.errors as f64 * 100.0 / (o.ok + o.errors).max(1) as f64,
            pct(&o.latencies_us, 0.50),
            pct(&o.latencies_us, 0.99),
            o.ok as f64 / o.elapsed.as_secs_f64()
        );
        nodes[1].start();

        // A cooldown set by n1 (A answers 503 once: eject_after = 1) and the next requests on n2, n3.
        a.plan(mock_upstream::Plan { times: usize::MAX, status: 503, ..mock_upstream::Plan::default() });
        let before = a.calls();
        let mut set_at = None;
        for _ in 0..200 {
            one(ports[0], "POST", "/v1/chat/completions", &token, &chat("rotation/r")).await;
            if a.calls() > before {
                set_at = Some(Instant::now());
                break;
            }
        }
        let set_at = set_at.expect("A was never tried");
        let calls = a.calls();
        let mut first = None;
        for i in 0..40 {
            let (status, _) = one(ports[1 + i % 2], "POST", "/v1/chat/completions", &token, &chat("rotation/r")).await;
            assert_eq!(status, 200);
            first.get_or_insert_with(|| set_at.elapsed());
        }
        a.heal();
        println!(
            "cooldown set on n1 → n2 and n3: {} of 40 requests sent to the cooled upstream, the first {:.2} ms after \
             it was set",
            a.calls() - calls,
            first.unwrap_or_default().as_secs_f64() * 1000.0
        );

        // A revocation made on n1, probed on n2 and n3 until both refuse the token.
        let mut times = Vec::new();
        for _ in 0..if full { 50 } else { 3 } {
            let (_, body) = one(nginx.port, "POST", "/admin/api/tokens", ADMIN, r#"{"user":"bench"}"#).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let (t, id) = (v["token"].as_str().unwrap().to_owned(), v["id"].as_i64().unwrap());
            let (status, _) = one(ports[0], "DELETE", &format!("/admin/api/tokens/{id}"), ADMIN, "").await;
            assert_eq!(status, 204);
            let start = Instant::now();
            for p in &ports[1..] {
                while one(*p, "POST", "/v1/chat/completions", &t, &chat("qwen")).await.0 != 401 {
                    assert!(start.elapsed() < Duration::from_secs(30), "the revocation never arrived");
                }
            }
            times.push(start.elapsed().as_micros() as u64);
        }
        times.sort_unstable();
        println!(
            "revocation on n1 → refused on n2 and n3: p50 {:.2} ms, p99 {:.2} ms over {} trials",
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.len()
        );

        // Usage records: every request that reached an upstream, exactly once.
        let reached: Vec<String> = a
            .received()
            .iter()
            .chain(b.received().iter())
            .filter_map(|r| r.header("x-request-id").map(str::to_owned))
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect();
        let store = switchyard::store::Store::connect(&pg.url, 2).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let (lost, duplicated, total) = loop {
            let rows = switchyard::store::query_usage(store.conn(), &Default::default(), 10_000_000).await.unwrap();
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for r in &rows {
                *counts.entry(r.request_id.as_str()).or_default() += 1;
            }
            let lost = reached.iter().filter(|id| !counts.contains_key(id.as_str())).count();
            let duplicated = counts.values().filter(|n| **n > 1).count();
            if lost == 0 || Instant::now() > deadline {
                break (lost, duplicated, rows.len());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        println!(
            "usage records: {} requests reached the upstreams (a failover reaches two), {total} records; {lost} \
             lost, {duplicated} duplicated",
            reached.len()
        );
    });
    drop(nginx);
    drop(nodes);
    drop(redis);
    drop(pg);
}
