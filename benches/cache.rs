//! Response-cache benchmark: a hit against a miss and against the upstream itself, on the
//! in-process cache and on Redis, and the in-process cache's memory at its bound.
//!
//! Run with `cargo bench --bench cache`. It starts the mock upstream in this process, a Redis of
//! its own (when `redis-server` is installed) and two `switchyard` nodes on loopback — one with
//! the embedded cache, one whose cache is that Redis — then, per node, measures four targets:
//! `direct` (the mock), `off` (a rotation with `cache_ttl_secs = 0`: the gateway without the
//! cache), `miss` (the cached rotation with `Cache-Control: no-cache`: key, upstream call and
//! store) and `hit` (the cached rotation, the same body every time). For each: the highest
//! requests/s at 64 connections (and how many were refused: hits can outrun the usage writer,
//! whose full queue refuses billable requests), p50/p99 at a fixed 1,000 requests/s, and the sequential p50 of
//! `hit`, `miss` and `off` against `direct` in alternated blocks. Then a third node, bounded by
//! `BENCH_CACHE_MIB` MiB (default 8), is filled with four times as many distinct answers as fit:
//! its entries, bytes, evictions and resident memory are printed before and after.
//! Environment: `BENCH_SECS` (default 5) per measurement; `BENCH_CACHE_BOUND_ONLY=1` runs only
//! the memory part.
#![allow(
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::allow_attributes,
    reason = "benchmark binary"
)]

#[path = "support/load.rs"]
mod load;
#[path = "../tests/it/support/mock_upstream.rs"]
mod mock_upstream;
#[path = "support/node.rs"]
mod node;

use std::process::Child;
use std::time::{Duration, Instant};

use load::{Target, fixed_rate, max_rate, median, paired_blocks, pct, read_response};
use node::cli;
use tokio::io::AsyncWriteExt as _;

/// Starts a node with the cache on (`extra`: more settings); returns it, its port and an admin
/// token.
fn start_node(bin: &str, mock_base: &str, dir: &tempfile::TempDir, extra: &str) -> (Child, u16, String) {
    std::fs::write(
        dir.path().join("bench.toml"),
        format!(
            "[server]\nport = 0\n[database]\nurl = \"sqlite://bench.db?mode=rwc\"\n[log]\nlevel = \"error\"\n\
             [cache]\nenabled = true\nttl_secs = 3600\n{extra}\n\
             [[providers]]\nid = \"local\"\ntype = \"openai\"\nendpoint = \"{mock_base}\"\nmodels = [{{ name = \"qwen\" }}]\n\
             [[rotations]]\nname = \"cached\"\nstrategy = \"priority\"\n\
             entries = [{{ provider_id = \"local\", model = \"qwen\" }}]\n\
             [[rotations]]\nname = \"plain\"\nstrategy = \"priority\"\ncache_ttl_secs = 0\n\
             entries = [{{ provider_id = \"local\", model = \"qwen\" }}]\n"
        ),
    )
    .unwrap();
    cli(bin, dir, &["user", "create", "admin", "--role", "admin"]);
    let token = cli(bin, dir, &["token", "create", "--user", "admin"])["token"].as_str().unwrap().to_owned();
    let (child, port) = node::serve(bin, dir);
    (child, port, token)
}

/// A private `redis-server` on a free port, if one is installed.
fn start_redis(dir: &tempfile::TempDir) -> Option<(Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let args =
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node::spawn_listening("redis-server", &args, dir.path(), port).map(|c| (c, port))
}

/// The load client's requests carry one header line after the token: `Cache-Control` for misses.
fn auth_with(token: &str, header: &str) -> String {
    format!("{token}\r\n{header}")
}

fn targets(port: u16, token: &str) -> [Target; 3] {
    let t = |n: &'static str, auth: String, model| Target {
        name: n,
        port,
        path: "/v1/chat/completions".into(),
        auth: Some(auth),
        model,
    };
    [
        t("off", token.to_owned(), "rotation/plain"),
        t("miss", auth_with(token, "cache-control: no-cache"), "rotation/cached"),
        t("hit", token.to_owned(), "rotation/cached"),
    ]
}

/// `n` distinct requests (bodies `fill <i>`) to `model` over 32 connections; returns how many
/// answered 200.
async fn fill(port: u16, token: &str, model: &'static str, n: usize, pad: usize) -> usize {
    let pad = "x".repeat(pad);
    let mut tasks = Vec::new();
    for c in 0..32 {
        let (token, pad) = (token.to_owned(), pad.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (mut buf, mut tmp, mut ok) = (Vec::new(), vec![0u8; 16 * 1024], 0);
            for i in (c..n).step_by(32) {
                let body =
                    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"fill {i} {pad}"}}]}}"#);
                let req = format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                     authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(req.as_bytes()).await.unwrap();
                if read_response(&mut s, &mut buf, &mut tmp).await.unwrap_or(0) == 200 {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .flatten()
        .unwrap_or(0)
}

fn cache_status(port: u16, token: &str) -> serde_json::Value {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = write!(
        s,
        "GET /admin/api/cache HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or_default()
}

/// The node's usage records waiting to be written (`switchyard_usage_queue_depth`).
fn usage_queue(port: u16) -> u64 {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix("switchyard_usage_queue_depth "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn measure(node: &str, direct: &Target, ts: &[Target; 3], secs: u64, blocks: usize) {
    println!("== {node} ==");
    println!("{:<8} {:>10} {:>10} {:>12} {:>12}", "target", "max req/s", "refused", "p50 @1k ms", "p99 @1k ms");
    let mut rows: Vec<(&str, f64, u64, f64, f64)> = Vec::new();
    for t in std::iter::once(direct).chain(ts.iter()) {
        let max = max_rate(t, secs).await;
        let rate = max.ok as f64 / max.elapsed.as_secs_f64();
        // Hits can outrun the usage writer (SQLite here): past `usage.queue_capacity` records
        // waiting, billable requests get 503 until it drains. Let it drain before the next run.
        for _ in 0..600 {
            if t.auth.is_none() || usage_queue(t.port) < 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fixed = fixed_rate(t, secs, false).await;
        assert_eq!(fixed.errors, 0, "{}: errors at 1,000 requests/s", t.name);
        rows.push((t.name, rate, max.errors, pct(&fixed.latencies_us, 0.50), pct(&fixed.latencies_us, 0.99)));
    }
    for (name, rate, refused, p50, p99) in &rows {
        println!("{name:<8} {rate:>10.0} {refused:>10} {p50:>12.3} {p99:>12.3}");
    }
    println!("sequential p50 over direct ({blocks} alternated blocks of 100):");
    for t in ts {
        let pairs = paired_blocks(t, direct, blocks, 100, false).await;
        let added = median(pairs.iter().map(|(a, b)| a - b).collect());
        let own = median(pairs.iter().map(|(a, _)| *a).collect());
        println!("  {:<6} p50 {own:>8.1} µs, {added:>+8.1} µs over direct", t.name);
    }
    println!();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: u64 = if full { std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5) } else { 1 };
    let blocks = if full { 30 } else { 2 };
    let bound_mib: u64 = std::env::var("BENCH_CACHE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let (mock_port, mock_base) = mock_upstream::MockUpstream::start_detached();
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let direct =
        Target { name: "direct", port: mock_port, path: "/v1/chat/completions".into(), auth: None, model: "qwen" };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();

    let bench = Bench { bin, mock_base: &mock_base, rt: &rt, local: &local, full };
    if std::env::var("BENCH_CACHE_BOUND_ONLY").as_deref() != Ok("1") {
        latency(&bench, &direct, secs, blocks);
    }
    bound_memory(&bench, bound_mib);
}

/// What every part of the run shares: the binary, the mock, the load client's runtime.
struct Bench<'a> {
    bin: &'a str,
    mock_base: &'a str,
    rt: &'a tokio::runtime::Runtime,
    local: &'a tokio::task::LocalSet,
    full: bool,
}

/// Latency and throughput of hits, misses and uncached requests on both caches.
fn latency(b: &Bench<'_>, direct: &Target, secs: u64, blocks: usize) {
    let Bench { bin, mock_base, rt, local, .. } = *b;
    let mem_dir = tempfile::tempdir().unwrap();
    let (mut mem, mem_port, mem_token) = start_node(bin, mock_base, &mem_dir, "");
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = start_redis(&redis_dir);
    let mut redis_node = redis.as_ref().map(|(_, port)| {
        let extra = format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"bench:\"\n");
        start_node(bin, mock_base, &redis_dir, &extra)
    });
    local.block_on(rt, async {
        measure("in-process cache", direct, &targets(mem_port, &mem_token), secs, blocks).await;
        match &redis_node {
            Some((_, port, token)) => measure("Redis cache", direct, &targets(*port, token), secs, blocks).await,
            None => println!("== Redis cache ==\nredis-server is not installed: skipped.\n"),
        }
    });
    let _ = mem.kill();
    if let Some((c, ..)) = redis_node.as_mut() {
        let _ = c.kill();
    }
    if let Some((mut c, _)) = redis {
        let _ = c.kill();
    }
}

/// The in-process cache filled far past its bound: its figures and the node's memory.
fn bound_memory(b: &Bench<'_>, bound_mib: u64) {
    let Bench { bin, mock_base, rt, local, full } = *b;
    // Memory at the bound: about four times as many distinct entries (~500 bytes each, as
    // weighed) as fit.
    let bound_dir = tempfile::tempdir().unwrap();
    let bound = bound_mib * 1024 * 1024;
    let (mut node, port, token) = start_node(bin, mock_base, &bound_dir, &format!("max_bytes = {bound}\n"));
    let pid = node.id();
    let per_entry = 500u64;
    let n = if full { (4 * bound / per_entry) as usize } else { 2_000 };
    local.block_on(rt, async {
        // The same load on the uncached route first: the node's own memory (the tokenizer's
        // tables, buffers, the allocator's arenas, the usage writer) is in place before.
        fill(port, &token, "rotation/plain", n / 2, 64).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(pid);
        let started = Instant::now();
        // The mock's answer is small; the prompt is padded so each request has its own key.
        let ok = fill(port, &token, "rotation/cached", n, 64).await;
        let took = started.elapsed();
        let status = cache_status(port, &token);
        let after = rss_kib(pid);
        println!("== in-process cache at its bound ({bound_mib} MiB) ==");
        println!(
            "{ok} of {n} distinct requests in {:.1} s ({:.0}/s); entries {}, bytes {} ({:.1} MiB), evictions {}",
            took.as_secs_f64(),
            ok as f64 / took.as_secs_f64(),
            status["entries"],
            status["bytes"],
            status["bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
            status["evictions"]
        );
        println!(
            "resident memory: {:.1} MiB after the same load uncached, {:.1} MiB after filling ({:+.1} MiB; bound {bound_mib} MiB)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after as f64 - before as f64) / 1024.0
        );
        assert!(status["bytes"].as_u64().unwrap_or(u64::MAX) <= bound, "over the bound: {status}");
    });
    let _ = node.kill();
}
