//! Load benchmark: direct-to-mock versus through-the-gateway, alternated in one run.
//!
//! Run with `cargo bench --bench gateway` (release profile). It starts the mock upstream in this
//! process, the `switchyard` binary as a child process on loopback, and a keep-alive HTTP/1.1
//! load client, then prints for both targets: the highest requests/s at 64 connections, p50 and
//! p99 latency at a fixed 1,000 requests/s (non-streaming and streaming), the ratios, and the
//! node's peak RSS; then, for `baseline` and the traced nodes, what each adds to one request's
//! p50 over this build's gateway, measured sequentially in alternated blocks (microsecond
//! resolution, unlike the fixed-rate figures on a shared machine; `BENCH_BLOCKS`, default 30, blocks
//! of 100 requests per target and kind). Environment: `BENCH_SECS` (default 5) per measurement; `BENCH_BASELINE_BIN`,
//! the `switchyard` binary of another commit (say the previous one, built in a worktree), adds it
//! as a target `baseline` alternated with the rest, for an A/B in one run.
//!
//! Dialects: the same node also serves Anthropic Messages and OpenAI Responses clients, and the
//! mock speaks Anthropic Messages too, so translation is measured against passthrough to the same
//! upstream: `msg_oai` (Messages client, OpenAI upstream) and `resp_oai` (Responses client) over
//! `gateway` (Chat to OpenAI, a passthrough), and `chat_anth` (Chat client, Anthropic upstream)
//! over `msg_anth` (Messages to Anthropic, a passthrough); `anth_direct` is the mock's Messages
//! route without the gateway.
//!
//! Tracing: two more nodes of this build export spans over OTLP/gRPC, one sampling every request
//! (`traced`), one 1 % (`traced_1pct`), to `BENCH_OTLP_GRPC` (an OTLP receiver; a closed port such
//! as `http://127.0.0.1:9` leaves out the export's encoding and sending), else to a discarding
//! OTLP/gRPC receiver the benchmark runs in its own process (`support/otlp_sink.rs`: each batch is
//! encoded and sent, as to a collector on another machine; the run prints what it received).
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
#[path = "support/node.rs"]
mod node;
#[path = "support/otlp_sink.rs"]
mod otlp_sink;

use std::process::{Child, Command};
use std::time::Instant;

use load::{CONNECTIONS, RATE, Target, fixed_rate, max_rate, median, paired_blocks, pct, peak_rss_kib};
use node::cli;

/// Starts the node; returns it, its port, an admin token and the token of a user whose tier and
/// token have rate limits, concurrency and quotas (set far above the load, so every check runs
/// and none refuses).
fn start_gateway(bin: &str, mock_base: &str, dir: &tempfile::TempDir, extra: &str) -> (Child, u16, String, String) {
    std::fs::write(
        dir.path().join("bench.toml"),
        format!(
            "[server]\nport = 0\n[database]\nurl = \"sqlite://bench.db?mode=rwc\"\n[log]\nlevel = \"error\"\n{extra}\n\
             [[providers]]\nid = \"local\"\ntype = \"openai\"\nendpoint = \"{mock_base}\"\nmodels = [{{ name = \"qwen\" }}]\n\
             [[providers]]\nid = \"anth\"\ntype = \"anthropic\"\nendpoint = \"{mock_base}\"\nmodels = [{{ name = \"claude\" }}]\n\
             [[rotations]]\nname = \"bench\"\nstrategy = \"weighted\"\n\
             entries = [{{ provider_id = \"local\", model = \"qwen\", weight = 1 }}]\n\
             [[autoselects]]\nname = \"bench\"\nselection = \"rules\"\nclassify_privacy = true\n\
             available_models = [{{ route = \"provider/local/qwen\", privacy = true }}]\n\
             [[prices]]\nmodel = \"qwen\"\ninput_per_million = 0.1\noutput_per_million = 0.2\n"
        ),
    )
    .unwrap();
    cli(bin, dir, &["user", "create", "admin", "--role", "admin"]);
    let token = cli(bin, dir, &["token", "create", "--user", "admin"])["token"].as_str().unwrap().to_owned();
    cli(
        bin,
        dir,
        &[
            "tier",
            "set",
            "bench",
            "--rpm",
            "100000000",
            "--tpm",
            "100000000000",
            "--concurrency",
            "100000",
            "--quota-usd",
            "1000000000",
            "--max-tokens",
            "100000",
        ],
    );
    cli(bin, dir, &["user", "create", "limited", "--tier", "bench"]);
    let limited = cli(
        bin,
        dir,
        &[
            "token",
            "create",
            "--user",
            "limited",
            "--rpm",
            "100000000",
            "--tpm",
            "100000000000",
            "--quota-usd",
            "1000000000",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (child, port) = node::serve(bin, dir);
    (child, port, token, limited)
}

/// CPU time a process has used so far (every thread), in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// CPU time the HTTP workers of a node (threads `actix-rt|system:…`, where a request is served
/// and waited for) have used so far, in nanoseconds: the request path's own cost, without the
/// ledger writer, the database pool or the trace exporter.
fn worker_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("actix-rt")))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// A node's `/metrics` text.
fn metrics_text(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The OTLP/gRPC receiver the traced nodes export to: `BENCH_OTLP_GRPC`, else a discarding one
/// in this process (`support/otlp_sink.rs`), else (it cannot bind) a closed port.
fn otlp_receiver() -> (String, Option<otlp_sink::Sink>) {
    if let Some(url) = std::env::var("BENCH_OTLP_GRPC").ok().filter(|u| !u.is_empty()) {
        println!("Traced nodes export to {url}.\n");
        return (url, None);
    }
    match otlp_sink::start() {
        Ok(sink) => {
            println!("Traced nodes export to a discarding OTLP/gRPC receiver on 127.0.0.1:{}.\n", sink.port);
            (format!("http://127.0.0.1:{}", sink.port), Some(sink))
        }
        Err(e) => {
            println!(
                "No OTLP receiver ({e}): traced nodes export to a closed port; their spans are dropped at export.\n"
            );
            ("http://127.0.0.1:9".to_owned(), None)
        }
    }
}

/// An nginx `proxy_pass` to the mock, as the floor of what any proxy costs on this machine.
fn start_nginx(mock_port: u16, dir: &tempfile::TempDir) -> Option<(u16, Child)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let root = dir.path().join("nginx");
    std::fs::create_dir_all(root.join("tmp")).ok()?;
    std::fs::write(
        root.join("nginx.conf"),
        format!(
            "daemon off; worker_processes 1; pid nginx.pid; error_log error.log error;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;\n\
             fastcgi_temp_path tmp/f; uwsgi_temp_path tmp/u; scgi_temp_path tmp/s;\n\
             upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://mock; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_buffering off; }} }} }}\n"
        ),
    )
    .ok()?;
    let prefix = format!("{}/", root.display());
    node::spawn_listening(nginx, &["-p", &prefix, "-c", "nginx.conf"], dir.path(), port).map(|c| (port, c))
}

/// Time per classification of a realistic prompt by the privacy classifier.
fn classifier_cost(full: bool) -> (f64, f64) {
    let c = switchyard::privacy::Classifier::new(
        &["patient".into(), "salary".into(), "confidential".into()],
        &[r"\bPROJ-\d{4}\b".into(), r"(?i)internal use only".into()],
    )
    .unwrap();
    let clean = "Please refactor this function so that it handles errors without panicking, keeps the public \
                 API stable and adds tests for the edge cases we discussed. "
        .repeat(12);
    let private = format!("{clean} Contact jane.doe@example.com or card 4111 1111 1111 1111.");
    let mut out = [0f64; 2];
    for (k, text) in [clean.as_str(), private.as_str()].into_iter().enumerate() {
        let n = if full { 20_000 } else { 200 };
        let start = Instant::now();
        let mut found = 0usize;
        for _ in 0..n {
            found += std::hint::black_box(c.classify(std::hint::black_box(text))).kinds.len();
        }
        out[k] = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        assert_eq!(found > 0, k == 1);
    }
    (out[0], out[1])
}

/// Time per exact token count of the same ~1.9 KB prompt (only paid when its byte bound exceeds
/// a context limit, or when an upstream reports no usage).
fn tokenizer_cost(full: bool) -> (f64, u64) {
    switchyard::tokens::warm();
    let text = "Please refactor this function so that it handles errors without panicking, keeps the public \
                API stable and adds tests for the edge cases we discussed. "
        .repeat(12);
    let n = if full { 2_000 } else { 20 };
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..n {
        tokens = std::hint::black_box(switchyard::tokens::count(std::hint::black_box(&text)));
    }
    (start.elapsed().as_secs_f64() * 1e6 / n as f64, tokens)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this is a short smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let secs: u64 = if full { std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5) } else { 1 };
    // `BENCH_ROUNDS` throughput rounds (default 2): more narrow the best-of on a noisy machine.
    let rounds = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).filter(|r| *r > 0).unwrap_or(2);
    let (throughput_rounds, latency_rounds) = if full { (rounds, 3) } else { (1, 1) };
    let (clean_us, private_us) = classifier_cost(full);
    println!(
        "Privacy classifier on a ~1.9 KB prompt: {clean_us:.1} µs (clean), {private_us:.1} µs (with an e-mail and a card number)\n"
    );

    let (count_us, tokens) = tokenizer_cost(full);
    println!("Tokenizer (o200k_base) on the same prompt: {count_us:.1} µs ({tokens} tokens)\n");

    let dir = tempfile::tempdir().unwrap();
    // The mock runs on its own actix system thread with one worker.
    let (mock_port, mock_base) = mock_upstream::MockUpstream::start_detached();
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let (mut child, gw_port, token, limited) = start_gateway(bin, &mock_base, &dir, "");
    let baseline_dir = tempfile::tempdir().unwrap();
    let baseline = std::env::var("BENCH_BASELINE_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .map(|bin| start_gateway(&bin, &mock_base, &baseline_dir, ""));
    let (otlp, sink) = otlp_receiver();
    let traced_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let traced: Vec<_> = [1.0, 0.01]
        .iter()
        .zip(&traced_dirs)
        .map(|(ratio, d)| {
            let cfg =
                format!("[telemetry]\notlp_endpoint = \"{otlp}\"\nsample_ratio = {ratio}\nservice_name = \"bench\"");
            start_gateway(bin, &mock_base, d, &cfg)
        })
        .collect();
    let nginx = start_nginx(mock_port, &dir);
    let mut targets = vec![
        Target { name: "direct", port: mock_port, path: "/v1/chat/completions".into(), auth: None, model: "qwen" },
        Target {
            name: "gateway",
            port: gw_port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "qwen",
        },
        Target {
            name: "rotation",
            port: gw_port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "rotation/bench",
        },
        Target {
            name: "autoselect",
            port: gw_port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "autoselect/bench",
        },
        Target {
            name: "limited",
            port: gw_port,
            path: "/v1/chat/completions".into(),
            auth: Some(limited),
            model: "qwen",
        },
        Target { name: "anth_direct", port: mock_port, path: "/v1/messages".into(), auth: None, model: "claude" },
        Target {
            name: "msg_anth",
            port: gw_port,
            path: "/v1/messages".into(),
            auth: Some(token.clone()),
            model: "provider/anth/claude",
        },
        Target {
            name: "msg_oai",
            port: gw_port,
            path: "/v1/messages".into(),
            auth: Some(token.clone()),
            model: "qwen",
        },
        Target {
            name: "chat_anth",
            port: gw_port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "provider/anth/claude",
        },
        Target {
            name: "resp_oai",
            port: gw_port,
            path: "/v1/responses".into(),
            auth: Some(token.clone()),
            model: "qwen",
        },
    ];
    if let Some((_, port, token, _)) = &baseline {
        targets.push(Target {
            name: "baseline",
            port: *port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "qwen",
        });
    }
    for (name, (_, port, token, _)) in ["traced", "traced_1pct"].into_iter().zip(&traced) {
        targets.push(Target {
            name,
            port: *port,
            path: "/v1/chat/completions".into(),
            auth: Some(token.clone()),
            model: "qwen",
        });
    }
    if let Some((port, _)) = &nginx {
        targets.push(Target {
            name: "nginx",
            port: *port,
            path: "/v1/chat/completions".into(),
            auth: None,
            model: "qwen",
        });
    }

    // `BENCH_TARGETS=gateway,baseline` keeps only those (and `direct`, the reference).
    if let Some(keep) = std::env::var("BENCH_TARGETS").ok().filter(|v| !v.is_empty()) {
        let keep: Vec<String> = keep.split(',').map(|k| k.trim().to_owned()).collect();
        targets.retain(|t| t.name == "direct" || keep.iter().any(|k| k == t.name));
    }
    // The node behind each target, for its CPU time per request.
    let mut pids: Vec<(&str, u32)> =
        ["gateway", "rotation", "autoselect", "limited", "msg_anth", "msg_oai", "chat_anth", "resp_oai"]
            .into_iter()
            .map(|n| (n, child.id()))
            .collect();
    if let Some((b, ..)) = &baseline {
        pids.push(("baseline", b.id()));
    }
    for (name, (t, ..)) in ["traced", "traced_1pct"].into_iter().zip(&traced) {
        pids.push((name, t.id()));
    }
    let pid_of = |name: &str| pids.iter().find(|(n, _)| *n == name).map(|(_, p)| *p);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        for t in &targets {
            max_rate(t, 1).await;
        }
        println!("Switchyard load benchmark: {CONNECTIONS} connections, {secs} s per measurement, targets alternated.");
        println!("(nginx, when installed, is a plain proxy_pass to the same mock: the floor of what any proxy costs here.)\n");
        let mut best = vec![0f64; targets.len()];
        if !full {
            println!("(smoke run under cargo test: figures are not meaningful; use cargo bench)\n");
        }
        // The node's CPU time per request at saturation (all its threads): unlike the rate, not
        // shared with the load generator and the mock on the same cores.
        let mut sat_cpu: Vec<Vec<f64>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..throughput_rounds {
            for (i, t) in targets.iter().enumerate() {
                let before = pid_of(t.name).map(cpu_ns);
                let o = max_rate(t, secs).await;
                let rps = o.ok as f64 / o.elapsed.as_secs_f64();
                let cpu = match (before, pid_of(t.name)) {
                    (Some(b), Some(pid)) if o.ok > 0 => {
                        let us = (cpu_ns(pid) - b) as f64 / 1000.0 / o.ok as f64;
                        sat_cpu[i].push(us);
                        format!(", node CPU {us:.1} µs/request")
                    }
                    _ => String::new(),
                };
                println!("round {round} max throughput {:<10} {rps:>9.0} req/s  ({} errors{cpu})", t.name, o.errors);
                best[i] = best[i].max(rps);
            }
        }
        println!();
        // Fixed rate: three alternated rounds, medians reported (this machine is shared and noisy).
        let mut lat: Vec<[Vec<f64>; 4]> = targets.iter().map(|_| Default::default()).collect();
        let mut cpu: Vec<[Vec<f64>; 2]> = targets.iter().map(|_| Default::default()).collect();
        for round in 0..latency_rounds {
            for (i, t) in targets.iter().enumerate() {
                for (k, stream) in [false, true].into_iter().enumerate() {
                    let before = pid_of(t.name).map(cpu_ns);
                    let o = fixed_rate(t, secs, stream).await;
                    if let (Some(b), Some(pid)) = (before, pid_of(t.name))
                        && o.ok > 0
                    {
                        cpu[i][k].push((cpu_ns(pid) - b) as f64 / 1000.0 / o.ok as f64);
                    }
                    let (p50, p99) = (pct(&o.latencies_us, 0.50), pct(&o.latencies_us, 0.99));
                    println!(
                        "round {round} {} at {RATE} req/s {:<10} p50 {p50:>7.3} ms  p99 {p99:>7.3} ms  ({} ok, {} errors)",
                        if stream { "streaming    " } else { "non-streaming" },
                        t.name,
                        o.ok,
                        o.errors
                    );
                    lat[i][2 * k].push(p50);
                    lat[i][2 * k + 1].push(p99);
                }
            }
        }
        // Paired sequential latency: what a feature adds to one request's time on an otherwise idle
        // node, resolved to microseconds (the fixed-rate p50s above move by ±0.3 ms between runs).
        let blocks = std::env::var("BENCH_BLOCKS").ok().and_then(|b| b.parse().ok()).filter(|b| *b > 0).unwrap_or(30);
        let (blocks, per_block) = if full { (blocks, 100) } else { (2, 5) };
        // The HTTP workers' CPU per request is read around each paired run: each node serves only
        // its own blocks, so each counter holds only its own requests.
        // Per target: each block's p50 difference, and the workers' CPU difference per request
        // (non-streaming, streaming).
        struct Paired<'a> {
            reference: &'a str,
            name: &'a str,
            diffs: [Vec<f64>; 2],
            cpu: [f64; 2],
        }
        let mut paired: Vec<Paired<'_>> = Vec::new();
        let pairs = [
            ("gateway", "baseline"),
            ("gateway", "traced"),
            ("gateway", "traced_1pct"),
            ("gateway", "msg_oai"),
            ("gateway", "resp_oai"),
            ("msg_anth", "chat_anth"),
        ];
        for (reference, name) in pairs {
            let Some(g) = targets.iter().find(|t| t.name == reference) else { continue };
            let Some(t) = targets.iter().find(|t| t.name == name) else { continue };
            let (mut diffs, mut cpu): ([Vec<f64>; 2], [f64; 2]) = Default::default();
            for (k, stream) in [false, true].into_iter().enumerate() {
                let (pg, pt) = (pid_of(reference), pid_of(name));
                let before = (pg.map(worker_cpu_ns), pt.map(worker_cpu_ns));
                let got = paired_blocks(g, t, blocks, per_block, stream).await;
                let n = (blocks * per_block) as f64;
                let per = |pid: Option<u32>, b: Option<u64>| match (pid, b) {
                    (Some(p), Some(b)) => (worker_cpu_ns(p) - b) as f64 / 1000.0 / n,
                    _ => f64::NAN,
                };
                let (cg, ct) = (per(pg, before.0), per(pt, before.1));
                cpu[k] = ct - cg;
                diffs[k] = got.iter().map(|(a, b)| b - a).collect();
                let (a, b): (Vec<f64>, Vec<f64>) = got.into_iter().unzip();
                println!(
                    "sequential {} {reference} p50 {:.0} µs, workers' CPU {cg:.1} µs/request; {name} p50 {:.0} µs, {ct:.1} µs/request ({blocks} blocks of {per_block})",
                    if stream { "streaming    " } else { "non-streaming" },
                    median(a),
                    median(b)
                );
            }
            paired.push(Paired { reference, name, diffs, cpu });
        }
        let m: Vec<[f64; 4]> = lat.into_iter().map(|l| l.map(median)).collect();
        let c: Vec<[f64; 2]> = cpu.into_iter().map(|l| l.map(|v| if v.is_empty() { f64::NAN } else { median(v) })).collect();
        println!("\nSummary (throughput: best of {throughput_rounds} rounds; latency: median of {latency_rounds} rounds)");
        for (i, t) in targets.iter().enumerate().skip(1) {
            println!("  {:<10} max throughput {:>7.0} req/s = {:.2} x direct ({:.0} req/s)", t.name, best[i], best[i] / best[0], best[0]);
        }
        for (i, t) in targets.iter().enumerate() {
            if !sat_cpu[i].is_empty() {
                println!("  {:<10} node CPU per request at saturation: {:.1} µs (median of {} rounds)", t.name, median(sat_cpu[i].clone()), sat_cpu[i].len());
            }
        }
        for (i, t) in targets.iter().enumerate().skip(1) {
            println!(
                "  {:<10} added latency at {RATE} req/s: non-streaming p50 {:+.3} ms, p99 {:+.3} ms; streaming p50 {:+.3} ms, p99 {:+.3} ms",
                t.name,
                m[i][0] - m[0][0],
                m[i][1] - m[0][1],
                m[i][2] - m[0][2],
                m[i][3] - m[0][3]
            );
        }
        for (i, t) in targets.iter().enumerate() {
            if !c[i][0].is_nan() {
                println!(
                    "  {:<10} node CPU per request at {RATE} req/s: non-streaming {:.1} µs, streaming {:.1} µs",
                    t.name, c[i][0], c[i][1]
                );
            }
        }
        let g = targets.iter().position(|t| t.name == "gateway");
        for (name, label) in [
            ("rotation", "rotation over the direct provider route"),
            ("autoselect", "autoselect over the direct provider route"),
            ("limited", "tier limits + quotas on, over the same route with them off"),
            ("baseline", "BENCH_BASELINE_BIN's gateway over this build's (negative: this build is slower)"),
            ("traced", "tracing at 100 % sampling over tracing off"),
            ("traced_1pct", "tracing at 1 % sampling over tracing off"),
        ] {
            if let (Some(g), Some(r)) = (g, targets.iter().position(|t| t.name == name)) {
                println!(
                    "  {label}: non-streaming p50 {:+.3} ms, p99 {:+.3} ms; streaming p50 {:+.3} ms, p99 {:+.3} ms",
                    m[r][0] - m[g][0],
                    m[r][1] - m[g][1],
                    m[r][2] - m[g][2],
                    m[r][3] - m[g][3]
                );
            }
        }
        for (reference, name, label) in [
            ("gateway", "msg_oai", "Messages → OpenAI (translated) over Chat → OpenAI (passthrough)"),
            ("gateway", "resp_oai", "Responses → OpenAI (translated) over Chat → OpenAI (passthrough)"),
            ("msg_anth", "chat_anth", "Chat → Anthropic (translated) over Messages → Anthropic (passthrough)"),
        ] {
            let (Some(a), Some(b)) =
                (targets.iter().position(|t| t.name == reference), targets.iter().position(|t| t.name == name))
            else {
                continue;
            };
            println!(
                "  {label}: max throughput {:.0} vs {:.0} req/s ({:+.1} %); added latency at {RATE} req/s: non-streaming p50 {:+.3} ms, streaming p50 {:+.3} ms",
                best[b],
                best[a],
                (best[b] / best[a] - 1.0) * 100.0,
                m[b][0] - m[a][0],
                m[b][2] - m[a][2]
            );
        }
        for Paired { reference, name, diffs, cpu } in &paired {
            let [n, st] = diffs.clone().map(|mut d| {
                d.sort_by(f64::total_cmp);
                let q = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
                (q(0.5), q(0.25), q(0.75))
            });
            // Two targets on one node share its workers' counter: no CPU difference to read.
            let cpu = if pid_of(reference) == pid_of(name) {
                "n/a (one node serves both)".to_owned()
            } else {
                format!("non-streaming {:+.1} µs, streaming {:+.1} µs", cpu[0], cpu[1])
            };
            println!(
                "  {name:<10} over {reference}, sequential p50 (median of {blocks} alternated blocks of {per_block}, blocks' IQR): non-streaming {:+.1} µs ({:+.1}..{:+.1}), streaming {:+.1} µs ({:+.1}..{:+.1}); HTTP workers' CPU per request: {cpu}",
                n.0, n.1, n.2, st.0, st.1, st.2
            );
        }
        println!("  gateway peak RSS: {:.1} MB", peak_rss_kib(child.id()) as f64 / 1024.0);
        for (name, (_, port, ..)) in ["traced", "traced_1pct"].into_iter().zip(&traced) {
            let m = metrics_text(*port);
            let count = |fate: &str| {
                m.lines()
                    .find(|l| l.starts_with(&format!("switchyard_trace_spans_total{{fate=\"{fate}\"}}")))
                    .and_then(|l| l.rsplit(' ').next())
                    .unwrap_or("0")
                    .to_owned()
            };
            println!("  {name}: spans exported {}, dropped {}", count("exported"), count("dropped"));
        }
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    for (mut b, ..) in baseline.into_iter().chain(traced) {
        let _ = Command::new("kill").args(["-TERM", &b.id().to_string()]).status();
        let _ = b.wait();
    }
    if let Some((exports, bytes)) = sink.as_ref().map(otlp_sink::Sink::received) {
        println!("  OTLP receiver: {exports} export calls, {:.1} MB", bytes as f64 / 1e6);
    }
    if let Some((_, mut n)) = nginx {
        if let Ok(log) = std::fs::read_to_string(dir.path().join("nginx/error.log")) {
            let last: Vec<&str> = log.lines().rev().take(3).collect();
            if !last.is_empty() {
                println!("  nginx error log (last lines): {}", last.join(" | "));
            }
        }
        // SIGTERM: the master stops its worker (SIGKILL would orphan it).
        let _ = Command::new("kill").args(["-TERM", &n.id().to_string()]).status();
        let _ = n.wait();
    }
}
