//! Finding a top-level member of a JSON object in its bytes, without parsing it, so a body can
//! be forwarded byte for byte with one member replaced (and prompts of megabytes are not
//! serialised again). The text is already known to be valid JSON; any surprise gives `None` and
//! the caller serialises instead.

use std::ops::Range;

/// Where a top-level member is, in an object's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Just after the object's `{`: where a new first member can be inserted.
    pub open: usize,
    /// The member's value, if the object has the key.
    pub value: Option<Range<usize>>,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string, quotes included.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        self.expect(b'"')?;
        loop {
            let rest = self.b.get(self.i..)?;
            let at = memchr::memchr2(b'"', b'\\', rest)?;
            self.i += at;
            if self.peek()? == b'\\' {
                self.i += 2;
            } else {
                self.i += 1;
                return Some(start..self.i);
            }
        }
    }

    /// Any value.
    fn value(&mut self) -> Option<Range<usize>> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
            }
        }
        Some(start..self.i)
    }
}

/// Finds the top-level member `key` of the JSON object `text`.
pub fn member(text: &[u8], key: &str) -> Option<Member> {
    let mut s = Scan { b: text, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let open = s.i;
    s.ws();
    if s.peek()? == b'}' {
        return Some(Member { open, value: None });
    }
    loop {
        s.ws();
        let k = s.string()?;
        let raw_key = text.get(k.start + 1..k.end - 1)?;
        let matches = if raw_key.contains(&b'\\') {
            serde_json::from_slice::<String>(text.get(k)?).ok()? == key
        } else {
            raw_key == key.as_bytes()
        };
        s.ws();
        s.expect(b':')?;
        let v = s.value()?;
        if matches {
            return Some(Member { open, value: Some(v) });
        }
        s.ws();
        match s.peek()? {
            b',' => s.i += 1,
            b'}' => return Some(Member { open, value: None }),
            _ => return None,
        }
    }
}

/// Applies non-overlapping edits (range replaced by bytes; an empty range inserts) to `text`.
pub fn splice(text: &[u8], mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Option<Vec<u8>> {
    edits.sort_by_key(|(r, _)| r.start);
    let extra: usize = edits.iter().map(|(_, b)| b.len()).sum();
    let mut out = Vec::with_capacity(text.len() + extra);
    let mut at = 0;
    for (r, bytes) in edits {
        out.extend_from_slice(text.get(at..r.start)?);
        out.extend_from_slice(&bytes);
        at = r.end.max(at);
    }
    out.extend_from_slice(text.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_members_only() {
        let t = br#" { "messages" : [{"model":"inner","x":"a\"b}"}], "m\u006fdel":"gpt" ,"n":1}"#;
        let m = member(t, "model").unwrap();
        assert_eq!(&t[m.value.clone().unwrap()], br#""gpt""#);
        assert_eq!(&t[m.open..m.open + 1], b" ");
        assert_eq!(&t[member(t, "n").unwrap().value.unwrap()], b"1");
        assert_eq!(member(t, "absent").unwrap().value, None);
        assert_eq!(member(b"{}", "model"), Some(Member { open: 1, value: None }));
        for bad in [&b"[1]"[..], b"{\"a\"", b"{\"a\":}", b"{\"b\":1 2,\"a\":1}", b""] {
            assert_eq!(member(bad, "a").and_then(|m| m.value), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn splices_in_order() {
        let t = br#"{"model":"a","stream":true}"#;
        let m = member(t, "model").unwrap();
        let out = splice(t, vec![(m.value.unwrap(), br#""b""#.to_vec()), (m.open..m.open, b"\"x\":1,".to_vec())]);
        assert_eq!(out.unwrap(), br#"{"x":1,"model":"b","stream":true}"#.to_vec());
    }
}
