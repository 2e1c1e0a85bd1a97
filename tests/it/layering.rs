//! The module layering of the code map (`src/lib.rs`), enforced over every `crate::` path —
//! grouped imports (`use crate::{a, b::{c, d}}`) expanded:
//!
//! - a file may only use modules of a lower layer, plus the arrows listed inside a layer;
//! - forbidden arrows stay forbidden (`proxy` never uses `control`, `admin` never uses `proxy`);
//! - no import cycle between the files of one module (a module's `mod.rs` counts as a file: a
//!   child that imports through its parent's facade, while the facade uses that child, is a
//!   cycle);
//! - libraries stay where they belong: `sea_orm` in `store/`, `redis` in `shared/`, hyper in
//!   `upstream/http.rs`, awc nowhere; OpenAI's JSON field names only in `dialect/`;
//! - no function of the data plane is longer than 150 lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn layer_of(module: &str) -> Option<u8> {
    Some(match module {
        "types" | "error" | "tokens" | "crypto" | "privacy" => 0,
        "config" => 1,
        "store" | "shared" | "upstream" | "dialect" | "telemetry" => 2,
        "catalog" | "accounting" | "broker" | "control" | "cache" => 3,
        "proxy" | "admin" | "dashboard" | "ops" => 4,
        "server" | "cli" => 5,
        _ => return None,
    })
}

/// Arrows allowed inside one layer.
fn allowed_sideways(from: &str, to: &str) -> bool {
    matches!((from, to), ("accounting", "catalog") | ("control", "catalog") | ("cli", "server"))
}

/// Arrows never allowed, whatever the layers.
fn forbidden(from: &str, to: &str) -> bool {
    matches!((from, to), ("proxy", "control") | ("proxy", "admin") | ("admin", "proxy") | ("dashboard", "proxy"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file: comments removed, and everything from its test module on cut.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses a path tree at `s[*i..]` (segments, `::`, `{…}` groups) below `prefix`.
fn tree(s: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let mut path = prefix;
    loop {
        skip_ws(i);
        if *i < s.len() && s[*i] == b'{' {
            *i += 1;
            loop {
                skip_ws(i);
                if *i >= s.len() {
                    return;
                }
                if s[*i] == b'}' {
                    *i += 1;
                    return;
                }
                if s[*i] == b',' {
                    *i += 1;
                    continue;
                }
                let before = *i;
                tree(s, i, path.clone(), out);
                // Skip an `as alias` or anything unparsed up to the next separator.
                while *i < s.len() && s[*i] != b',' && s[*i] != b'}' {
                    *i += 1;
                }
                if *i == before {
                    *i += 1;
                }
            }
        }
        let start = *i;
        while *i < s.len() && is_ident(s[*i]) {
            *i += 1;
        }
        if *i == start {
            break;
        }
        let seg = String::from_utf8_lossy(&s[start..*i]).into_owned();
        if seg != "self" {
            path.push(seg);
        }
        if s[*i..].starts_with(b"::") {
            *i += 2;
            continue;
        }
        break;
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// Every `crate::` path in `code`, groups expanded, as segments after `crate`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (is_ident(s[at - 1]) || s[at - 1] == b'$') {
            continue;
        }
        let mut i = at + "crate::".len();
        tree(s, &mut i, Vec::new(), &mut out);
    }
    out
}

#[test]
fn path_trees_expand_groups() {
    let got = crate_paths(
        "use crate::{a::{b, c::D}, e};\nuse crate::f::{\n    self,\n    g as h,\n};\nlet x = crate::i::j(crate::k::L);",
    );
    let want: Vec<Vec<String>> =
        [vec!["a", "b"], vec!["a", "c", "D"], vec!["e"], vec!["f"], vec!["f", "g"], vec!["i", "j"], vec!["k", "L"]]
            .iter()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .collect();
    assert_eq!(got, want);
}

/// A file's node in its module's graph: `proxy/admit`, `dialect/openai` (its `mod.rs`), `proxy`.
fn node_of(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    rel.strip_suffix("/mod").unwrap_or(rel).to_owned()
}

/// The node a `crate::` path lands on: the deepest file or directory module it names.
fn resolve(root: &Path, path: &[String]) -> String {
    let mut node = path[0].clone();
    for seg in &path[1..] {
        let next = format!("{node}/{seg}");
        if root.join(format!("{next}.rs")).is_file() || root.join(&next).join("mod.rs").is_file() {
            node = next;
        } else {
            break;
        }
    }
    node
}

#[test]
fn modules_respect_their_layers_and_have_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut violations = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        *seen.entry(module.clone()).or_default() += 1;
        let text = std::fs::read_to_string(f).unwrap();
        let code = code_of(&text);
        let from_node = node_of(&rel);
        let mut edges = BTreeSet::new();
        for path in crate_paths(&code) {
            let target = &path[0];
            if let (Some(from), Some(to)) = (layer_of(&module), layer_of(target))
                && *target != module
            {
                if to > from || (to == from && !allowed_sideways(&module, target)) {
                    violations.push(format!("src/{rel}: {module} (L{from}) uses crate::{target} (L{to})"));
                }
                if forbidden(&module, target) {
                    violations.push(format!("src/{rel}: {module} may never use crate::{target}"));
                }
            }
            if *target == module && path.len() > 1 {
                let to = resolve(&root, &path);
                if to != from_node {
                    edges.insert(to);
                }
            }
        }
        // A facade (`mod.rs`) uses the children it names by relative paths (`child::x`, `pub use child::…`).
        if rel.ends_with("mod.rs") {
            let dir = rel.trim_end_matches("/mod.rs");
            for line in code.lines() {
                let l = line.trim();
                // Declarations and re-exports are the module's face, not uses of its children.
                let face = ["pub mod ", "mod ", "pub use ", "pub(crate) use ", "pub(crate) mod "];
                if face.iter().any(|p| l.starts_with(p)) {
                    continue;
                }
                for child in std::fs::read_dir(root.join(dir)).unwrap() {
                    let child = child.unwrap().path();
                    let name = child.file_stem().unwrap().to_string_lossy().into_owned();
                    if name == "mod" {
                        continue;
                    }
                    let needle = format!("{name}::");
                    let used = l
                        .match_indices(&needle)
                        .any(|(at, _)| at == 0 || !(is_ident(l.as_bytes()[at - 1]) || l[..at].ends_with("::")));
                    if used {
                        edges.insert(format!("{dir}/{name}"));
                    }
                }
            }
        }
        graph.entry(from_node).or_default().extend(edges);
        for (i, line) in code.lines().enumerate() {
            let n = i + 1;
            if line.contains("sea_orm::") && module != "store" {
                violations.push(format!("src/{rel}:{n}: sea_orm outside store/"));
            }
            if (line.contains("redis::") || line.contains("deadpool_redis")) && module != "shared" {
                violations.push(format!("src/{rel}:{n}: redis outside shared/"));
            }
            let hyper = ["hyper::", "hyper_util::", "hyper_rustls::", "http_body_util::"];
            if hyper.iter().any(|h| line.contains(h)) && rel != "upstream/http.rs" {
                violations.push(format!("src/{rel}:{n}: the HTTP client outside upstream/http.rs"));
            }
            if line.contains("awc::") {
                violations.push(format!("src/{rel}:{n}: awc (it drops close-delimited bodies) in the gateway"));
            }
            let openai_fields = [
                "\"choices\"",
                "\"stream_options\"",
                "\"include_usage\"",
                "\"messages\"",
                "\"delta\"",
                "\"finish_reason\"",
            ];
            if module != "dialect" && openai_fields.iter().any(|w| line.contains(w)) {
                violations.push(format!("src/{rel}:{n}: an OpenAI field name outside dialect/"));
            }
        }
    }
    assert!(seen.len() >= 10, "the walker found too few modules: {seen:?}");
    // Cycles: depth-first search over each module's file graph.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_owned());
            out.push(format!("import cycle: {}", cycle.join(" → ")));
            return;
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            visit(m, g, stack, done, out);
        }
        stack.pop();
        done.insert(n.to_owned());
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done, &mut violations);
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn data_plane_functions_stay_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut long = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            let is_fn = ["fn ", "pub fn ", "async fn ", "pub async fn ", "pub(crate) fn ", "pub(crate) async fn "]
                .iter()
                .any(|p| t.starts_with(p));
            if !is_fn || t.ends_with(';') {
                continue;
            }
            let end = lines[i..].iter().position(|x| *x == format!("{indent}}}")).map_or(0, |p| p + 1);
            if end > 150 {
                long.push(format!("{}:{}: {} lines", f.display(), i + 1, end));
            }
        }
    }
    assert!(long.is_empty(), "functions over 150 lines in src/proxy:\n{}", long.join("\n"));
}
