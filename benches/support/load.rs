//! The benchmarks' load client: keep-alive HTTP/1.1 over raw sockets (no client library in
//! the measured path), closed-loop throughput and open-loop fixed-rate latency without
//! coordinated omission. Included by each bench with `#[path]`.
#![allow(dead_code, clippy::allow_attributes, reason = "shared by the benches; each uses a part")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const CONNECTIONS: usize = 64;
pub const RATE: u64 = 1_000;

#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub port: u16,
    pub path: String,
    pub auth: Option<String>,
    pub model: &'static str,
}

/// A request to `t`, its body in the dialect of the path: Chat, Anthropic Messages
/// (`…/messages`) or OpenAI Responses (`…/responses`), all asking the same.
pub fn request(t: &Target, stream: bool) -> Vec<u8> {
    const ASK: &str = "Say hello in one short sentence.";
    let body = if t.path.ends_with("/messages") {
        format!(
            r#"{{"model":"{}","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"{ASK}"}}]}}"#,
            t.model
        )
    } else if t.path.ends_with("/responses") {
        format!(r#"{{"model":"{}","stream":{stream},"input":"{ASK}"}}"#, t.model)
    } else {
        format!(r#"{{"model":"{}","stream":{stream},"messages":[{{"role":"user","content":"{ASK}"}}]}}"#, t.model)
    };
    let auth = t.auth.as_ref().map(|a| format!("authorization: Bearer {a}\r\n")).unwrap_or_default();
    format!(
        "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}",
        t.path,
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response (Content-Length or chunked); returns the status.
pub async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, tmp: &mut [u8]) -> std::io::Result<u16> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(tmp).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    if let Some(len) =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < head_end + len {
            let n = s.read(tmp).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..head_end + len);
    } else {
        // Chunked: read until the terminating zero-size chunk.
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(p) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + p;
                }
                let n = s.read(tmp).await?;
                if n == 0 {
                    return Err(std::io::Error::other("closed"));
                }
                buf.extend_from_slice(&tmp[..n]);
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[pos..line_end]).trim(), 16).unwrap_or(0);
            let need = line_end + 2 + size + 2;
            while buf.len() < need {
                let n = s.read(tmp).await?;
                if n == 0 {
                    return Err(std::io::Error::other("closed"));
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            pos = need;
            if size == 0 {
                break;
            }
        }
        buf.drain(..pos);
    }
    Ok(status)
}

pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
}

/// Closed loop: every connection sends as fast as answers come back.
pub async fn max_rate(t: &Target, secs: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let req = Arc::new(request(t, false));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..CONNECTIONS {
        let (stop, ok, errors, req, port) = (stop.clone(), ok.clone(), errors.clone(), req.clone(), t.port);
        tasks.push(tokio::task::spawn_local(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (mut buf, mut tmp) = (Vec::new(), vec![0u8; 16 * 1024]);
            while !stop.load(Ordering::Relaxed) {
                let sent = s.write_all(&req).await;
                match (sent, read_response(&mut s, &mut buf, &mut tmp).await) {
                    (Ok(()), Ok(200)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    (Ok(()), Ok(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    // The server closed the connection (nginx does after keepalive_requests): reconnect.
                    _ => {
                        buf.clear();
                        s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                        s.set_nodelay(true).unwrap();
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Outcome {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latencies_us: vec![],
        elapsed: start.elapsed(),
    }
}

/// Open loop at [`RATE`] requests/s spread over the connections; latency counts from the intended
/// send time, so a stall is not hidden (no coordinated omission).
pub async fn fixed_rate(t: &Target, secs: u64, stream: bool) -> Outcome {
    fixed_rate_at(t, secs, stream, RATE).await
}

/// [`fixed_rate`] at `rate` requests/s.
pub async fn fixed_rate_at(t: &Target, secs: u64, stream: bool, rate: u64) -> Outcome {
    let req = Arc::new(request(t, stream));
    let per_conn = rate as f64 / CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let total_per_conn = (per_conn * secs as f64) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (req, port) = (req.clone(), t.port);
        let offset = interval.mul_f64(c as f64 / CONNECTIONS as f64);
        tasks.push(tokio::task::spawn_local(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (mut buf, mut tmp) = (Vec::new(), vec![0u8; 16 * 1024]);
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(total_per_conn as usize));
            for i in 0..total_per_conn {
                let due = start + offset + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let sent = s.write_all(&req).await;
                match (sent, read_response(&mut s, &mut buf, &mut tmp).await) {
                    (Ok(()), Ok(200)) => ok += 1,
                    (Ok(()), Ok(_)) => errors += 1,
                    _ => {
                        // Closed by the server: count it, reconnect, go on.
                        errors += 1;
                        buf.clear();
                        s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                        s.set_nodelay(true).unwrap();
                    }
                }
                lat.push(due.elapsed().as_micros() as u64);
            }
            (ok, errors, lat)
        }));
    }
    let mut out = Outcome { ok: 0, errors: 0, latencies_us: Vec::new(), elapsed: Duration::ZERO };
    for t in tasks {
        let (ok, errors, lat) = t.await.unwrap();
        out.ok += ok;
        out.errors += errors;
        out.latencies_us.extend(lat);
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    out
}

pub fn pct(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sequential requests (one keep-alive connection to each target, one request at a time) to `a`
/// and `b` in alternated blocks (`blocks` of `per_block` each, the order swapped every block), so
/// that drift and noise on a shared machine fall on both alike. Returns each block's p50 latency
/// (µs) for `a` and for `b`.
pub async fn paired_blocks(a: &Target, b: &Target, blocks: usize, per_block: usize, stream: bool) -> Vec<(f64, f64)> {
    async fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }
    async fn block(s: &mut TcpStream, t: &Target, req: &[u8], n: usize, buf: &mut Vec<u8>, tmp: &mut [u8]) -> f64 {
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let sent = s.write_all(req).await;
            match (sent, read_response(s, buf, tmp).await) {
                (Ok(()), Ok(200)) => lat.push(started.elapsed().as_micros() as u64),
                _ => {
                    buf.clear();
                    *s = connect(t.port).await;
                }
            }
        }
        lat.sort_unstable();
        pct(&lat, 0.50) * 1000.0
    }
    let (ra, rb) = (request(a, stream), request(b, stream));
    let (mut sa, mut sb) = (connect(a.port).await, connect(b.port).await);
    let (mut buf, mut tmp) = (Vec::new(), vec![0u8; 16 * 1024]);
    let mut out = Vec::with_capacity(blocks);
    for i in 0..blocks {
        let (pa, pb) = if i % 2 == 0 {
            let pa = block(&mut sa, a, &ra, per_block, &mut buf, &mut tmp).await;
            (pa, block(&mut sb, b, &rb, per_block, &mut buf, &mut tmp).await)
        } else {
            let pb = block(&mut sb, b, &rb, per_block, &mut buf, &mut tmp).await;
            (block(&mut sa, a, &ra, per_block, &mut buf, &mut tmp).await, pb)
        };
        out.push((pa, pb));
    }
    out
}
