//! Protocol-level errors in the OpenAI shape. actix's HTTP/1 codec answers some requests before
//! any handler sees them — 400 for a head it cannot parse (a `Content-Length` with
//! `Transfer-Encoding`, two `Content-Length`s, a bad request line), 408 for a head that did not
//! arrive in time, 431 for a head too large — and it writes those answers with an empty body.
//! [`Shaped`] wraps each connection's socket and rewrites exactly those answers, as they are
//! written, into the error shape every other answer has.
//!
//! Only an answer that begins a write, has one of those statuses and `content-length: 0` is
//! rewritten: every answer the application writes with such a status has a JSON body (the
//! error-shape net in `server`), so nothing else can look like one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ApiError, Code};

/// A connection whose codec-level error answers are rewritten (see the module docs).
pub struct Shaped<T> {
    io: T,
    /// A rewritten answer still being written, and how much of it is out.
    pending: Vec<u8>,
    at: usize,
}

impl<T> Shaped<T> {
    /// Wraps a connection.
    pub fn new(io: T) -> Self {
        Self { io, pending: Vec::new(), at: 0 }
    }
}

/// The rewritten answer for `buf`, when it is a bodiless codec error answer.
pub fn shape(buf: &[u8]) -> Option<Vec<u8>> {
    // Every answer passes here: the status is looked at first, so an ordinary one costs a few
    // byte comparisons and no scan.
    let status = buf.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    let (code, message) = match status {
        b"400" => (
            Code::InvalidRequest,
            "The request is not valid HTTP/1.1 (its head could not be parsed: check the request line, `Content-Length` and `Transfer-Encoding`).",
        ),
        b"408" => (Code::RequestTimeout, "The request head did not arrive in time."),
        b"431" => (Code::HeadersTooLarge, "The request head is too large."),
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    if !headers.iter().any(|h| h.to_ascii_lowercase().replace(' ', "") == "content-length:0") {
        return None;
    }
    let body = ApiError::new(code, message).body();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(status_line);
    out.push_str("\r\n");
    for h in headers.iter().filter(|h| {
        let l = h.to_ascii_lowercase();
        !l.starts_with("content-length:") && !l.starts_with("content-type:")
    }) {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Some(bytes)
}

impl<T: AsyncWrite + Unpin> Shaped<T> {
    /// Writes what is left of a rewritten answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        self.pending.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Shaped<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Shaped<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(answer) = shape(buf) {
            self.pending = answer;
            self.at = 0;
            // Taken whole: what is not out yet goes before anything else written or flushed.
            if let Poll::Ready(Err(e)) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_codec_errors_are_rewritten() {
        let out =
            shape(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n") && head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
        let t =
            String::from_utf8(shape(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n").unwrap()).unwrap();
        assert!(t.contains("request_timeout"));
        let t = String::from_utf8(
            shape(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").unwrap(),
        )
        .unwrap();
        assert!(t.contains("request_header_fields_too_large"));
        for keep in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"error\":{}}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"data: HTTP/1.1 400\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(shape(keep).is_none(), "{}", String::from_utf8_lossy(keep));
        }
    }
}
