//! The privacy classifier: does a request carry secrets or personal data? It finds API keys and
//! other secret shapes, e-mail addresses, phone numbers, payment card numbers (Luhn-checked),
//! IBANs (mod-97 checked), US social security numbers, and configured keywords and regexes.
//! It returns a verdict and the kinds found — never the matched text — and runs on every request
//! that reaches a privacy-aware route, so it is one linear pass plus the configured regexes.

use regex::RegexSet;

/// What was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An API key, token, private key or password assignment.
    Secret,
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number that passes the Luhn check.
    Card,
    /// An IBAN that passes the mod-97 check.
    Iban,
    /// A US social security number.
    NationalId,
    /// A configured keyword.
    Keyword,
    /// A configured regex.
    Pattern,
}

/// The classifier's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Kinds found, sorted, without duplicates; empty means not private.
    pub kinds: Vec<Kind>,
}

impl Verdict {
    /// Whether the text must stay on private targets.
    pub fn is_private(&self) -> bool {
        !self.kinds.is_empty()
    }

    fn add(&mut self, k: Kind) {
        if !self.kinds.contains(&k) {
            self.kinds.push(k);
        }
    }
}

/// A classifier with its configured keywords and regexes.
#[derive(Debug)]
pub struct Classifier {
    keywords: Vec<String>,
    patterns: Option<RegexSet>,
}

/// A configured regex does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid privacy pattern: {0}")]
pub struct PatternError(String);

impl Classifier {
    /// A classifier with extra keywords (matched as whole words, ASCII case-insensitively) and regexes.
    pub fn new(keywords: &[String], patterns: &[String]) -> Result<Self, PatternError> {
        let patterns = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(patterns).map_err(|e| PatternError(e.to_string()))?)
        };
        let keywords = keywords.iter().map(|k| k.trim().to_ascii_lowercase()).filter(|k| !k.is_empty()).collect();
        Ok(Self { keywords, patterns })
    }

    /// Classifies one text.
    pub fn classify(&self, text: &str) -> Verdict {
        let mut v = Verdict::default();
        scan_words(text, &mut v);
        scan_digit_runs(text, &mut v);
        if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") {
            v.add(Kind::Secret);
        }
        if !self.keywords.is_empty() {
            let lower = text.to_ascii_lowercase();
            if self.keywords.iter().any(|k| contains_word(&lower, k)) {
                v.add(Kind::Keyword);
            }
        }
        if self.patterns.as_ref().is_some_and(|p| p.is_match(text)) {
            v.add(Kind::Pattern);
        }
        v.kinds.sort();
        v
    }
}

fn contains_word(haystack: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    haystack.match_indices(word).any(|(i, _)| {
        let before = haystack[..i].chars().next_back().is_none_or(|c| !is_word(c));
        let after = haystack[i + word.len()..].chars().next().is_none_or(|c| !is_word(c));
        before && after
    })
}

/// Checks each whitespace-separated word for secret shapes, e-mail addresses and IBANs.
fn scan_words(text: &str, v: &mut Verdict) {
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, raw) in words.iter().enumerate() {
        let w = raw.trim_matches(|c: char| {
            matches!(c, '"' | '\'' | '`' | ',' | ';' | '(' | ')' | '[' | ']' | '<' | '>' | '{' | '}')
        });
        if is_secret(w) {
            v.add(Kind::Secret);
        }
        if w.contains('@') && is_email(w.trim_end_matches('.')) {
            v.add(Kind::Email);
        }
        // IBANs are often written in groups of four: try the word joined with the next ones.
        if w.len() >= 2 && w.as_bytes()[..2].iter().all(u8::is_ascii_uppercase) {
            let mut joined = String::from(w);
            for next in words.iter().skip(i + 1).take(8) {
                if is_iban(&joined) {
                    break;
                }
                if next.len() > 4 || !next.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    break;
                }
                joined.push_str(next);
            }
            if is_iban(&joined) {
                v.add(Kind::Iban);
            }
        }
    }
}

fn is_secret(w: &str) -> bool {
    // Every shape below is at least 16 bytes long: most words leave here.
    if w.len() < 16 {
        return false;
    }
    let after = |p: &str| w.strip_prefix(p).map(|r| r.bytes().filter(|b| b.is_ascii_alphanumeric()).count());
    after("sk-").is_some_and(|n| n >= 20)
        || after("sk_live_").is_some_and(|n| n >= 16)
        || after("rk_live_").is_some_and(|n| n >= 16)
        || after("sy-").is_some_and(|n| n >= 40)
        || after("ghp_").is_some_and(|n| n >= 30)
        || after("gho_").is_some_and(|n| n >= 30)
        || after("github_pat_").is_some_and(|n| n >= 30)
        || after("xoxb-").is_some_and(|n| n >= 20)
        || after("xoxp-").is_some_and(|n| n >= 20)
        || after("glpat-").is_some_and(|n| n >= 20)
        || after("AIza").is_some_and(|n| n >= 30)
        || (w.len() == 20 && w.starts_with("AKIA") && w.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        || is_jwt(w)
        || (w.contains('=') && {
            let lower = w.to_ascii_lowercase();
            ["password=", "passwd=", "api_key=", "apikey=", "secret=", "token="]
                .iter()
                .any(|p| lower.find(p).is_some_and(|i| lower.len() > i + p.len() + 3))
        })
}

fn is_jwt(w: &str) -> bool {
    let parts: Vec<&str> = w.split('.').collect();
    parts.len() == 3
        && w.starts_with("eyJ")
        && parts.iter().all(|p| p.len() >= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn is_email(w: &str) -> bool {
    let Some((local, domain)) = w.split_once('@') else { return false };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
        && !local.starts_with('.');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

fn is_iban(s: &str) -> bool {
    let b = s.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        return false;
    }
    // Move the first four characters to the end, letters to numbers, then mod 97 must be 1.
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = if c.is_ascii_digit() { u32::from(c - b'0') } else { u32::from(c - b'A') + 10 };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut x = u32::from(*d);
        if i % 2 == 1 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    sum.is_multiple_of(10)
}

/// Finds runs of digits (with single spaces, dashes, dots or parentheses between groups) and
/// classifies them as card numbers, SSNs or phone numbers.
fn scan_digit_runs(text: &str, v: &mut Verdict) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_digit() || (b[i] == b'+' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) || b[i] == b'(') {
            i += 1;
            continue;
        }
        // A run starts only at a word boundary.
        if i > 0 && b[i - 1].is_ascii_alphanumeric() {
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            continue;
        }
        let start = i;
        let plus = b[i] == b'+';
        let mut digits: Vec<u8> = Vec::new();
        let mut shape = Vec::new();
        let mut j = i + usize::from(plus);
        while j < b.len() {
            let c = b[j];
            if c.is_ascii_digit() {
                digits.push(c - b'0');
                shape.push(b'd');
            } else if matches!(c, b' ' | b'-' | b'.' | b'(' | b')')
                && b.get(j + 1).is_some_and(|n| n.is_ascii_digit() || *n == b'(' || (c == b')' && *n == b' '))
                && shape.last() != Some(&c)
            {
                shape.push(c);
            } else {
                break;
            }
            j += 1;
        }
        let ends_clean = j >= b.len() || !b[j].is_ascii_alphanumeric();
        if ends_clean && !digits.is_empty() {
            classify_run(&digits, &shape, plus, &text[start..j], v);
        }
        i = j.max(i + 1);
    }
}

fn classify_run(digits: &[u8], shape: &[u8], plus: bool, raw: &str, v: &mut Verdict) {
    let n = digits.len();
    if (13..=19).contains(&n) && !plus && luhn(digits) {
        v.add(Kind::Card);
        return;
    }
    let dashed_ssn = shape == b"ddd-dd-dddd";
    if dashed_ssn {
        let area = u32::from(digits[0]) * 100 + u32::from(digits[1]) * 10 + u32::from(digits[2]);
        let group = u32::from(digits[3]) * 10 + u32::from(digits[4]);
        let serial = digits[5..].iter().fold(0u32, |a, d| a * 10 + u32::from(*d));
        if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
            v.add(Kind::NationalId);
            return;
        }
    }
    let separators = shape.iter().filter(|c| **c != b'd').count();
    let us_style = n == 10 && (raw.starts_with('(') || separators >= 2);
    if (plus && (8..=15).contains(&n)) || us_style {
        v.add(Kind::Phone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        Classifier::new(&["patient".into(), "salary".into()], &[r"\bPROJ-\d{4}\b".into()]).unwrap().classify(text).kinds
    }

    #[test]
    fn positives() {
        let cases: &[(&str, Kind)] = &[
            ("my key is sk-proj-abcdefghijklmnopqrstuvwx123", Kind::Secret),
            ("AWS AKIAIOSFODNN7EXAMPLE here", Kind::Secret),
            ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", Kind::Secret),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...", Kind::Secret),
            ("export PASSWORD=hunter2hunter2", Kind::Secret),
            ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N", Kind::Secret),
            ("mail jane.doe+test@example.co.uk please", Kind::Email),
            ("call +44 20 7946 0958 now", Kind::Phone),
            ("call (555) 123-4567", Kind::Phone),
            ("call 555-123-4567", Kind::Phone),
            ("card 4111 1111 1111 1111 exp 12/29", Kind::Card),
            ("card 5500-0000-0000-0004", Kind::Card),
            ("card 378282246310005", Kind::Card),
            ("iban GB82 WEST 1234 5698 7654 32", Kind::Iban),
            ("iban DE89370400440532013000", Kind::Iban),
            ("ssn 123-45-6789", Kind::NationalId),
            ("the Patient record", Kind::Keyword),
            ("ticket PROJ-1234 is private", Kind::Pattern),
        ];
        for (text, kind) in cases {
            assert!(kinds(text).contains(kind), "{text:?} → {:?}, wanted {kind:?}", kinds(text));
        }
    }

    #[test]
    fn near_misses_do_not_match() {
        for text in [
            "card 4111 1111 1111 1112",
            "order number 1234567890123",
            "version 1.2.3.4 released 2024-05-01",
            "the sk-short key",
            "email me at jane@localhost",
            "iban GB82 WEST 1234 5698 7654 33",
            "ssn 000-12-3456 and 666-12-3456 and 123-00-4567",
            "patients and salaryman",
            "PROJ-12345",
            "we sold 3,000,000 units in 2023",
            "call me at 12345",
            "see RFC 9700, section 4.1.2",
            "id a1b2c3d4e5f6",
        ] {
            assert!(kinds(text).is_empty(), "{text:?} → {:?}", kinds(text));
        }
    }

    #[test]
    fn verdict_never_holds_text() {
        let v = Classifier::new(&[], &[]).unwrap().classify("mail x@example.com card 4111111111111111");
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"kinds":["email","card"]}"#);
        assert!(Classifier::new(&[], &["(".into()]).is_err());
    }
}
