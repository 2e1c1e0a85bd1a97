//! An OpenAI-speaking upstream on a raw socket, so the body can be framed every way HTTP/1.1
//! allows — `Content-Length`, chunked, or ended by closing the connection (RFC 9112 §6.3, what
//! Python's `http.server` and HTTP/1.0 servers send) — for JSON answers and event streams alike.
#![allow(dead_code, clippy::allow_attributes, reason = "shared between the test binary and the benchmark")]

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How the answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, one chunk per piece.
    Chunked,
    /// HTTP/1.1, `Connection: close`, no length: the body ends when the connection does.
    Close,
    /// An HTTP/1.0 answer without a length.
    Http10,
}

/// A running framed upstream.
pub struct FramedUpstream {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FramedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply text every answer carries.
pub const TEXT: &str = "framed answer, all of it";

/// The JSON answer.
pub fn whole_body(model: &str) -> String {
    json!({"id": "framed-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
    .to_string()
}

/// The stream's events: one per word, the usage chunk, `[DONE]`.
pub fn events(model: &str) -> Vec<String> {
    let mut out: Vec<String> = TEXT
        .split_inclusive(' ')
        .map(|w| {
            let c = json!({"id": "framed-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
            format!("data: {c}\n\n")
        })
        .collect();
    let last = json!({"id": "framed-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    out.push(format!("data: {last}\n\n"));
    let usage = json!({"id": "framed-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}});
    out.push(format!("data: {usage}\n\n"));
    out.push("data: [DONE]\n\n".into());
    out
}

impl FramedUpstream {
    /// Starts on a random loopback port, framing every answer with `framing`.
    pub async fn start(framing: Framing) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind framed upstream");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, framing));
            }
        });
        Self { port, task }
    }

    /// The base URL for a provider's `endpoint`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

async fn serve(mut sock: tokio::net::TcpStream, framing: Framing) {
    // Read the head, then the body by its length.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let Ok(n) = sock.read(&mut tmp).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let Ok(n) = sock.read(&mut tmp).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body: serde_json::Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
    let model = body["model"].as_str().unwrap_or("m").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let (content_type, pieces) = if stream {
        ("text/event-stream", events(&model))
    } else {
        let b = whole_body(&model);
        let (a, z) = b.split_at(b.len() / 2);
        ("application/json", vec![a.to_owned(), z.to_owned()])
    };
    let total: usize = pieces.iter().map(String::len).sum();
    let head = match framing {
        Framing::Length => {
            format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {total}\r\n\r\n")
        }
        Framing::Chunked => {
            format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n")
        }
        Framing::Close => format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"),
        Framing::Http10 => format!("HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\n\r\n"),
    };
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for p in pieces {
        let out = if framing == Framing::Chunked { format!("{:x}\r\n{p}\r\n", p.len()) } else { p };
        if sock.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        let _ = sock.flush().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if framing == Framing::Chunked {
        let _ = sock.write_all(b"0\r\n\r\n").await;
    }
    let _ = sock.shutdown().await;
}
