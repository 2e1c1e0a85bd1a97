//! A Server-Sent Events framer (WHATWG rules): lines end in CRLF, LF or CR; `:` lines are
//! comments; `data` lines of one event join with LF; a blank line dispatches; an event cut by
//! end of stream is dropped. Each event keeps its raw bytes so the relay forwards them untouched.

use bytes::Bytes;

/// One complete event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's bytes as received, including the blank line that ended it.
    pub raw: Bytes,
    /// The joined `data` lines, if any.
    pub data: Option<Vec<u8>>,
}

/// A line was longer than the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an SSE line exceeded {0} bytes")]
pub struct LineTooLong(pub usize);

/// Incremental framer; feed it chunks as they arrive.
#[derive(Debug)]
pub struct SseFramer {
    buf: Vec<u8>,
    scan: usize,
    data: Option<Vec<u8>>,
    max_line: usize,
}

impl SseFramer {
    /// A framer that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self { buf: Vec::new(), scan: 0, data: None, max_line }
    }

    /// Adds bytes and returns every event they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut event_start = 0usize;
        let mut line_start = self.scan;
        let mut i = self.scan;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            // A CR at the very end may be the first half of CRLF: wait for more bytes.
            if b == b'\r' && i + 1 == self.buf.len() {
                break;
            }
            let line_end = i;
            let next = if b == b'\r' && self.buf[i + 1] == b'\n' { i + 2 } else { i + 1 };
            if line_end == line_start {
                // Blank line: dispatch (only if the event had any line at all).
                if line_start > event_start {
                    let raw = Bytes::copy_from_slice(&self.buf[event_start..next]);
                    events.push(SseEvent { raw, data: self.data.take() });
                }
                event_start = next;
            } else {
                self.field(line_start, line_end);
            }
            i = next;
            line_start = next;
        }
        if i - line_start > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        // Keep only the unfinished event; remember how far it was scanned.
        self.buf.drain(..event_start);
        self.scan = line_start - event_start;
        Ok(events)
    }

    fn field(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        if line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if name == b"data" {
            match &mut self.data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => self.data = Some(value.to_vec()),
            }
        }
    }

    /// Bytes of an event that never finished (dropped at end of stream).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes an event with one `data:` line per line of `data`.
pub fn encode_data(data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 16);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// One `data:` event around data that has no line break (compact JSON, `[DONE]`).
pub fn frame_data(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A JSON value as one `data:` event (compact JSON has no line break).
pub fn json_data(v: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    // Serialising a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A named event (`event: NAME`) with a JSON value as its data, as Anthropic and the Responses
/// API send them.
pub fn json_event(name: &str, v: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serialising a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut f = SseFramer::new(1 << 20);
        chunks.iter().flat_map(|c| f.push(c).unwrap()).collect()
    }

    #[test]
    fn frames_across_any_split() {
        let stream: &[u8] = b": hi\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: one\ndata: two\r\rdata: [DONE]\n\n";
        let whole = all(&[stream]);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].data, None);
        assert_eq!(whole[1].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(whole[2].data.as_deref(), Some(&b"one\ntwo"[..]));
        assert_eq!(whole[3].data.as_deref(), Some(&b"[DONE]"[..]));
        let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, stream);
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(all(&[a, b]), whole, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytewise), whole);
    }

    #[test]
    fn long_lines_are_refused() {
        let mut f = SseFramer::new(8);
        assert!(f.push(b"data: 0123456789").is_err());
    }

    #[test]
    fn cut_event_is_not_dispatched() {
        let mut f = SseFramer::new(1024);
        assert!(f.push(b"data: partial").unwrap().is_empty());
        assert!(f.pending() > 0);
    }

    #[test]
    fn encode_splits_lines() {
        assert_eq!(&encode_data("a\nb")[..], b"data: a\ndata: b\n\n");
    }
}
