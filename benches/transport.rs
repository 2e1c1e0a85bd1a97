//! The upstream transport alone: the same requests (JSON and SSE) to the tests' mock upstream,
//! one at a time on one actix worker thread, through awc (the client the gateway used before,
//! which cannot read close-delimited bodies) and through the gateway's own HTTP transport
//! (hyper connections driven by the request that uses them). Prints CPU and wall time per
//! request for each, alternated. Run: `cargo bench --bench transport`.
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
#[path = "../tests/it/support/mock_upstream.rs"]
mod mock_upstream;
use futures_util::StreamExt as _;
use std::time::Instant;

fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1000.0
}

fn main() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mock = mock_upstream::MockUpstream::start(1);
            mock.stop_recording();
            tx.send(mock.base()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let base = rx.recv().unwrap();
    actix_web::rt::System::new().block_on(async move {
        // `cargo bench` passes `--bench`; under `cargo test` this is a short smoke run.
        let n = if std::env::args().any(|a| a == "--bench") { 5000 } else { 50 };
        for stream in [false, true] {
            let body = format!(r#"{{"model":"qwen","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#);
            for round in 0..2 {
                let awc = awc::Client::builder().disable_timeout().finish();
                let c0 = cpu();
                let t0 = Instant::now();
                for _ in 0..n {
                    let mut r = awc
                        .post(format!("{base}/chat/completions"))
                        .insert_header(("content-type", "application/json"))
                        .send_body(body.clone())
                        .await
                        .unwrap();
                    let mut total = 0;
                    while let Some(c) = r.next().await {
                        total += c.unwrap().len();
                    }
                    assert!(total > 0);
                }
                println!(
                    "stream={stream} round={round} awc:   {:.1} µs cpu/req, {:.1} µs wall/req",
                    (cpu() - c0) / n as f64,
                    t0.elapsed().as_micros() as f64 / n as f64
                );
                let tls = switchyard::upstream::http::tls_config().unwrap();
                let clients = switchyard::upstream::http::Clients::new(
                    &tls,
                    std::time::Duration::from_secs(5),
                    std::time::Duration::from_secs(30),
                    std::sync::Arc::new(vec![]),
                );
                let endpoint = switchyard::upstream::Endpoint::parse(&base);
                let c0 = cpu();
                let t0 = Instant::now();
                for _ in 0..n {
                    let out = switchyard::upstream::Outgoing {
                        path: "/chat/completions".into(),
                        body: bytes::Bytes::from(body.clone()),
                        stream,
                        request_id: "x",
                        trace_headers: &[],
                        auth: switchyard::upstream::Auth::None,
                        headers: &[],
                        forwarded: &[],
                    };
                    let mut r = clients.open.send(&endpoint, out, std::time::Duration::from_secs(5)).await.unwrap();
                    let mut total = 0;
                    while let Some(c) = r.body.next().await {
                        total += c.unwrap().len();
                    }
                    assert!(total > 0);
                }
                println!(
                    "stream={stream} round={round} hyper: {:.1} µs cpu/req, {:.1} µs wall/req",
                    (cpu() - c0) / n as f64,
                    t0.elapsed().as_micros() as f64 / n as f64
                );
            }
        }
    });
}
