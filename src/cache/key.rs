//! The cache key: SHA-256 over who asks (the tenant, or nobody for a `global` route), the
//! resolved route, the ingress dialect and operation, whether it streams, and the request body
//! in a canonical form — object keys sorted at every depth, no whitespace, and the fields that do
//! not change the answer left out (`user`, `metadata`, `stream_options`; `model` and `stream`,
//! which the route and the stream flag stand for).

use serde_json::{Map, Value};
use sha2::Digest as _;

use crate::shared::cache::{CacheKey, route_tag};

/// Top-level fields that do not count.
const IGNORED: [&str; 5] = crate::dialect::ANSWER_NEUTRAL_FIELDS;

/// The facts a key is made of.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The tenant; `None` for a `global` route's shared entries.
    pub owner: Option<i64>,
    /// The resolved route (`rotation/coding`, `provider/x/m`, `user-rotation/r`).
    pub route: &'a str,
    /// The ingress dialect (`openai`, `anthropic`, `responses`).
    pub dialect: &'a str,
    /// The operation (`chat`, `completions`, `embeddings`).
    pub op: &'a str,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client's headers an upstream of its dialect receives (`anthropic-beta`): they may
    /// change the answer.
    pub headers: &'a [(&'static str, String)],
    /// The client's body as parsed.
    pub body: &'a Map<String, Value>,
}

/// The key of a request.
pub fn derive(ask: &Ask<'_>) -> CacheKey {
    let mut h = Hashing(sha2::Sha256::new());
    h.0.update(b"switchyard-cache-2\0");
    match ask.owner {
        Some(u) => {
            h.0.update(b"u");
            h.0.update(u.to_be_bytes());
        }
        None => h.0.update(b"g"),
    }
    for part in [ask.route, ask.dialect, ask.op] {
        h.0.update([0]);
        h.0.update(part.as_bytes());
    }
    h.0.update([0, u8::from(ask.stream), 0]);
    let mut headers: Vec<&(&str, String)> = ask.headers.iter().collect();
    headers.sort();
    for (name, value) in headers {
        h.0.update(name.as_bytes());
        h.0.update(b":");
        h.0.update(value.as_bytes());
        h.0.update([0]);
    }
    h.0.update([0]);
    let mut fields: Vec<(&String, &Value)> = ask.body.iter().filter(|(k, _)| !IGNORED.contains(&k.as_str())).collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    object(&mut h, fields);
    CacheKey { owner: ask.owner, route: route_tag(ask.route), digest: h.0.finalize().into() }
}

/// Feeds what is written to the hash.
struct Hashing(sha2::Sha256);

impl std::io::Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn object(h: &mut Hashing, fields: Vec<(&String, &Value)>) {
    h.0.update(b"{");
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            h.0.update(b",");
        }
        // Writing into a hash cannot fail.
        let _ = serde_json::to_writer(&mut *h, k);
        h.0.update(b":");
        canonical(h, v);
    }
    h.0.update(b"}");
}

fn canonical(h: &mut Hashing, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut fields: Vec<(&String, &Value)> = m.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            object(h, fields);
        }
        Value::Array(items) => {
            h.0.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.0.update(b",");
                }
                canonical(h, item);
            }
            h.0.update(b"]");
        }
        scalar_value => scalar(h, scalar_value),
    }
}

/// A string, number, boolean or null, as compact JSON (strings escaped one way only).
fn scalar(h: &mut Hashing, v: &Value) {
    // Writing a scalar into a hash cannot fail.
    let _ = serde_json::to_writer(&mut *h, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(s: &str) -> Map<String, Value> {
        match serde_json::from_str(s) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    fn key(owner: Option<i64>, route: &str, b: &Map<String, Value>) -> CacheKey {
        derive(&Ask { owner, route, dialect: "openai", op: "chat", stream: false, headers: &[], body: b })
    }

    #[test]
    fn key_order_whitespace_and_ignored_fields_do_not_count() {
        let a = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#);
        let b = body(
            r#"{ "temperature": 0.5, "messages": [ {"content": "hi", "role": "user"} ], "model": "rotation/m",
                "user": "u-1", "metadata": {"k": "v"}, "stream_options": {"include_usage": true} }"#,
        );
        assert_eq!(key(Some(1), "rotation/m", &a), key(Some(1), "rotation/m", &b));
        let c = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.6}"#);
        assert_ne!(key(Some(1), "rotation/m", &a), key(Some(1), "rotation/m", &c));
        // Order inside arrays is meaning.
        let d = body(r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#);
        let e = body(r#"{"messages":[{"role":"user","content":"b"},{"role":"user","content":"a"}]}"#);
        assert_ne!(key(Some(1), "r", &d), key(Some(1), "r", &e));
        let one = |dialect, op, stream| {
            derive(&Ask { owner: Some(1), route: "r", dialect, op, stream, headers: &[], body: &a }).digest
        };
        let all = [
            one("openai", "chat", false),
            one("openai", "chat", true),
            one("anthropic", "chat", false),
            one("openai", "completions", false),
        ];
        let beta = [("anthropic-beta", "tools-2024".to_owned())];
        let with_beta = derive(&Ask {
            owner: Some(1),
            route: "r",
            dialect: "openai",
            op: "chat",
            stream: false,
            headers: &beta,
            body: &a,
        });
        assert_ne!(with_beta.digest, one("openai", "chat", false), "a forwarded header counts");
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y, "dialect, operation and stream each count");
            }
        }
    }

    proptest! {
        /// Tenant isolation: two requests share a key only when they are the same request of the
        /// same tenant, or the same request of a `global` route (no owner).
        #[test]
        fn no_key_is_shared_across_tenants(
            u1 in 1i64..6, u2 in 1i64..6, r1 in 0usize..3, r2 in 0usize..3,
            t1 in "[a-c]{1,3}", t2 in "[a-c]{1,3}", global in any::<bool>(),
        ) {
            let routes = ["rotation/a", "provider/p/m", "user-rotation/a"];
            let b1 = body(&serde_json::json!({"messages": [{"role": "user", "content": t1}]}).to_string());
            let b2 = body(&serde_json::json!({"messages": [{"role": "user", "content": t2}]}).to_string());
            let owner = |u| if global { None } else { Some(u) };
            let k1 = key(owner(u1), routes[r1], &b1);
            let k2 = key(owner(u2), routes[r2], &b2);
            let same_request = r1 == r2 && t1 == t2;
            prop_assert_eq!(k1 == k2, same_request && (global || u1 == u2));
            prop_assert_eq!(k1.digest == k2.digest, k1 == k2);
        }
    }
}
