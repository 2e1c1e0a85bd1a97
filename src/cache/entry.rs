//! A cached answer and its stored form: a small header (when it was made, by which provider and
//! model, its usage), then the body — a whole JSON answer, or a stream's events as the client
//! received them, each flagged when it is the usage-only chunk a Chat client gets only on asking.
//! LZ4-compressed when that saves at least an eighth.

use bytes::{BufMut as _, Bytes, BytesMut};

use crate::types::Usage;

/// The first bytes of every stored entry (the format's version).
const MAGIC: &[u8; 4] = b"SYC1";
/// Bodies smaller than this are stored as they are.
const COMPRESS_FROM: usize = 512;

/// One event of a stored stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The event's bytes as sent (`data: …\n\n`, or a dialect's `event:` and `data:` lines).
    pub bytes: Bytes,
    /// The usage-only chunk of a Chat stream (sent only to a client that asked for usage).
    pub usage_only: bool,
}

/// The body of a cached answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A whole JSON answer.
    Whole(Bytes),
    /// A stream's events, in order.
    Stream(Vec<Frame>),
}

/// A cached answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// When it was stored (ms since the epoch).
    pub created_ms: i64,
    /// The provider that answered.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// The original request's usage.
    pub usage: Usage,
    /// That usage was estimated or counted by the gateway, not reported.
    pub estimated: bool,
    /// The answer.
    pub body: Stored,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    c: i64,
    p: String,
    m: String,
    u: [u64; 4],
    e: bool,
    s: bool,
}

impl Entry {
    /// The bytes of its body (what the size limit counts).
    pub fn body_bytes(&self) -> usize {
        match &self.body {
            Stored::Whole(b) => b.len(),
            Stored::Stream(frames) => frames.iter().map(|f| f.bytes.len()).sum(),
        }
    }

    /// Its stored form.
    pub fn encode(&self) -> Bytes {
        let u = self.usage;
        let header = Header {
            c: self.created_ms,
            p: self.provider.clone(),
            m: self.model.clone(),
            u: [u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens],
            e: self.estimated,
            s: matches!(self.body, Stored::Stream(_)),
        };
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let frames: Vec<(&Bytes, bool)> = match &self.body {
            Stored::Whole(b) => vec![(b, false)],
            Stored::Stream(fs) => fs.iter().map(|f| (&f.bytes, f.usage_only)).collect(),
        };
        let mut plain = BytesMut::with_capacity(header.len() + self.body_bytes() + 8 + frames.len() * 5);
        plain.put_u32(u32::try_from(header.len()).unwrap_or(u32::MAX));
        plain.put_slice(&header);
        plain.put_u32(u32::try_from(frames.len()).unwrap_or(u32::MAX));
        for (b, usage_only) in frames {
            plain.put_u8(u8::from(usage_only));
            plain.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
            plain.put_slice(b);
        }
        let mut out = BytesMut::with_capacity(plain.len() / 2 + 16);
        out.put_slice(MAGIC);
        if plain.len() >= COMPRESS_FROM {
            let packed = lz4_flex::block::compress_prepend_size(&plain);
            if packed.len() <= plain.len() - plain.len() / 8 {
                out.put_u8(1);
                out.put_slice(&packed);
                return out.freeze();
            }
        }
        out.put_u8(0);
        out.put_slice(&plain);
        out.freeze()
    }

    /// Reads a stored form of at most `limit` bytes decoded; `None` for bytes that are not one
    /// (another version, damaged, or claiming more).
    pub fn decode(stored: &[u8], limit: usize) -> Option<Self> {
        let rest = stored.strip_prefix(MAGIC)?;
        let (&flag, rest) = rest.split_first()?;
        let plain: std::borrow::Cow<'_, [u8]> = match flag {
            0 => rest.into(),
            1 => {
                let claimed = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
                if usize::try_from(claimed).ok()? > limit {
                    return None;
                }
                lz4_flex::block::decompress_size_prepended(rest).ok()?.into()
            }
            _ => return None,
        };
        let mut r = Reader(&plain);
        let header_len = r.u32()?;
        let header: Header = serde_json::from_slice(r.take(header_len)?).ok()?;
        let count = r.u32()?;
        let mut frames = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let usage_only = r.take(1)?.first()? == &1;
            let len = r.u32()?;
            frames.push(Frame { bytes: Bytes::copy_from_slice(r.take(len)?), usage_only });
        }
        if !r.0.is_empty() {
            return None;
        }
        let body =
            if header.s { Stored::Stream(frames) } else { Stored::Whole(frames.pop().filter(|_| count == 1)?.bytes) };
        let [prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens] = header.u;
        Some(Self {
            created_ms: header.c,
            provider: header.p,
            model: header.m,
            usage: Usage { prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens },
            estimated: header.e,
            body,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<usize> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(b)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: Stored) -> Entry {
        Entry {
            created_ms: 1_800_000_000_000,
            provider: "cloud".into(),
            model: "gpt".into(),
            usage: Usage { prompt_tokens: 10, completion_tokens: 20, cached_tokens: 3, cache_write_tokens: 1 },
            estimated: false,
            body,
        }
    }

    #[test]
    fn entries_round_trip_compressed_or_not() {
        let small = entry(Stored::Whole(Bytes::from_static(br#"{"id":"x"}"#)));
        let enc = small.encode();
        assert_eq!(enc[4], 0, "too small to compress");
        assert_eq!(Entry::decode(&enc, 1 << 20), Some(small));
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n";
        let mut frames: Vec<Frame> =
            (0..200).map(|_| Frame { bytes: Bytes::from(text.to_owned()), usage_only: false }).collect();
        frames.push(Frame { bytes: Bytes::from_static(b"data: {\"usage\":{}}\n\n"), usage_only: true });
        let big = entry(Stored::Stream(frames));
        let enc = big.encode();
        assert_eq!(enc[4], 1, "repetitive events compress");
        assert!(enc.len() < big.body_bytes() / 4, "{} of {}", enc.len(), big.body_bytes());
        assert_eq!(Entry::decode(&enc, 1 << 20), Some(big));
        // Anything else is not an entry.
        for bad in [&b""[..], b"SYC1", b"SYC1\x02", b"SYC2\x00", &enc[..enc.len() - 1]] {
            assert_eq!(Entry::decode(bad, 1 << 20), None);
        }
        let mut bomb = b"SYC1\x01".to_vec();
        bomb.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Entry::decode(&bomb, 1 << 20), None);
    }
}
