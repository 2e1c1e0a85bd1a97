//! The module layering of STYLE.md, enforced: a file may only `use crate::` modules of a lower
//! layer (plus the listed arrows inside a layer); `sea_orm` only in `store/`, `redis` only in `shared/`.

use std::collections::HashMap;
use std::path::Path;

fn layer_of(module: &str) -> Option<u8> {
    Some(match module {
        "types" | "error" | "tokens" | "crypto" | "privacy" => 0,
        "config" => 1,
        "store" | "shared" | "upstream" | "telemetry" => 2,
        "catalog" | "accounting" | "broker" | "control" => 3,
        "proxy" | "admin" | "dashboard" | "ops" => 4,
        "server" | "cli" => 5,
        _ => return None,
    })
}

/// Arrows allowed inside one layer.
fn allowed_sideways(from: &str, to: &str) -> bool {
    matches!((from, to), ("accounting", "catalog") | ("control", "catalog") | ("cli", "server"))
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn modules_respect_their_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut violations = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        *seen.entry(module.clone()).or_default() += 1;
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let after = &code[i + "crate::".len()..];
                let target: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let (Some(from), Some(to)) = (layer_of(&module), layer_of(&target)) else { continue };
                if target != module && (to > from || (to == from && !allowed_sideways(&module, &target))) {
                    violations.push(format!("src/{rel}:{}: {module} (L{from}) uses crate::{target} (L{to})", n + 1));
                }
            }
            if code.contains("sea_orm::") && module != "store" {
                violations.push(format!("src/{rel}:{}: sea_orm outside store/", n + 1));
            }
            if (code.contains("redis::") || code.contains("deadpool_redis")) && module != "shared" {
                violations.push(format!("src/{rel}:{}: redis outside shared/", n + 1));
            }
        }
    }
    assert!(seen.len() >= 10, "the walker found too few modules: {seen:?}");
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}
