//! The CLI on the real binary, with a temporary configuration.

use std::process::{Command, Stdio};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    c.env_remove("SWITCHYARD_CONFIG");
    c
}

fn run(dir: &tempfile::TempDir, args: &[&str]) -> (bool, Value, String) {
    let out = bin()
        .current_dir(dir.path())
        .args(["--config", "sy.toml", "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (out.status.success(), json, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sy.toml"),
        "[database]\nurl = \"sqlite://sy.db?mode=rwc\"\n[log]\nlevel = \"warn\"\n[[providers]]\nid = \"mock\"\ntype = \"mock\"\nmodels = [{ name = \"mock-chat\" }]\n",
    )
    .unwrap();
    dir
}

#[test]
fn users_and_tokens_round_trip() {
    let dir = project();
    let (ok, v, out) = run(&dir, &["migrate"]);
    assert!(ok, "{out}");
    assert_eq!(v["migrated"], true);

    let (ok, v, out) = run(&dir, &["user", "create", "alice"]);
    assert!(ok, "{out}");
    assert_eq!(v["user"]["username"], "alice");
    assert_eq!(v["user"]["role"], "user");
    let (ok, _, out) = run(&dir, &["user", "create", "alice"]);
    assert!(!ok, "duplicate accepted: {out}");
    let (ok, _, out) = run(&dir, &["user", "create", "Bad/Name"]);
    assert!(!ok, "bad name accepted: {out}");

    let (ok, v, out) = run(
        &dir,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "ci",
            "--expires",
            "2099-01-01T00:00:00Z",
            "--routes",
            "provider/mock/*",
        ],
    );
    assert!(ok, "{out}");
    let token = v["token"].as_str().unwrap().to_owned();
    let id = v["id"].as_i64().unwrap();
    assert!(token.starts_with("sy-") && token.len() >= 46);
    let (ok, v, out) = run(&dir, &["token", "list", "--user", "alice"]);
    assert!(ok, "{out}");
    assert_eq!(v["tokens"][0]["name"], "ci");
    assert!(!out.contains(&token), "token list shows the secret");
    assert_eq!(v["tokens"][0]["routes"][0], "provider/mock/*");

    let (ok, _, out) = run(&dir, &["token", "create", "--user", "alice", "--expires", "tomorrow"]);
    assert!(!ok && out.contains("RFC 3339"), "{out}");
    let (ok, _, out) = run(&dir, &["token", "create", "--user", "alice", "--rpm", "5", "--tpm", "1000"]);
    assert!(ok, "{out}");
    let (ok, _, out) = run(&dir, &["token", "create", "--user", "alice", "--rpm=-1"]);
    assert!(!ok && out.contains("0 or more"), "{out}");
    let (ok, _, out) = run(&dir, &["token", "create", "--user", "alice", "--quota-usd", "5"]);
    assert!(ok, "{out}");
    let (ok, _, out) = run(&dir, &["token", "create", "--user", "alice", "--quota-usd", "inf"]);
    assert!(!ok && out.contains("0 or more"), "{out}");
    let (ok, _, _) = run(&dir, &["token", "create", "--user", "nobody"]);
    assert!(!ok);

    let (ok, v, out) = run(&dir, &["token", "revoke", &id.to_string()]);
    assert!(ok, "{out}");
    assert_eq!(v["revoked"], id);
    let (ok, v, _) = run(&dir, &["token", "list", "--user", "alice"]);
    assert!(ok);
    assert_eq!(v["tokens"][0]["revoked"], true);

    let (ok, v, out) = run(&dir, &["user", "disable", "alice"]);
    assert!(ok, "{out}");
    assert_eq!(v["user"]["status"], "disabled");
    let (ok, v, _) = run(&dir, &["user", "list"]);
    assert!(ok);
    assert_eq!(v["users"].as_array().unwrap().len(), 1);

    // The database holds no plaintext token.
    let db = std::fs::read(dir.path().join("sy.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
}

#[test]
fn config_check_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sy.toml"),
        r#"
[[providers]]
id = "a"
type = "openai"
endpoint = "not a url"
models = [{ name = "m" }]
[[providers]]
id = "a"
type = "openai"
endpoint = "http://127.0.0.1:1/v1"
api_key = "sk-literal"
models = [{ name = "m" }]
[[rotations]]
name = "r"
strategy = "weighted"
entries = [{ provider_id = "ghost", model = "m", weight = -1 }]
"#,
    )
    .unwrap();
    let (ok, v, out) = run(&dir, &["config", "check"]);
    assert!(!ok, "{out}");
    let paths: Vec<String> =
        v["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap().to_owned()).collect();
    for p in ["providers[0].endpoint", "providers[1].id", "providers[1].api_key", "rotations[0].entries[0].provider_id"]
    {
        assert!(paths.iter().any(|x| x == p), "missing {p}: {out}");
    }
    assert!(!out.contains("sk-literal"), "a key was echoed: {out}");

    std::fs::write(dir.path().join("sy.toml"), "[server]\nprot = 1\n").unwrap();
    let (ok, v, out) = run(&dir, &["config", "check"]);
    assert!(!ok);
    assert!(v["problems"][0]["message"].as_str().unwrap().contains("prot"), "{out}");

    std::fs::write(dir.path().join("sy.toml"), "[server]\nport = 9\n").unwrap();
    let (ok, _, out) = run(&dir, &["config", "check"]);
    assert!(ok, "{out}");

    // serve refuses the same problems.
    std::fs::write(
        dir.path().join("sy.toml"),
        "[[providers]]\nid = \"v1\"\ntype = \"mock\"\nmodels = [{ name = \"m\" }]\n",
    )
    .unwrap();
    let (ok, _, out) = run(&dir, &["serve"]);
    assert!(!ok && out.contains("providers[0].id"), "{out}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = project();
    let out = bin()
        .current_dir(dir.path())
        .args(["--config", "sy.toml", "--json", "config", "check"])
        .env("SWITCHYARD__SERVER__MAX_BODY_BYTES", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("server.max_body_bytes"), "{text}");
}

#[test]
fn tiers_and_prices_round_trip() {
    let dir = project();
    let (ok, v, out) = run(
        &dir,
        &[
            "tier",
            "set",
            "pro",
            "--rpm",
            "60",
            "--tpm",
            "100000",
            "--concurrency",
            "4",
            "--quota-usd",
            "25",
            "--routes",
            "provider/*,rotation/*",
            "--max-tokens",
            "4096",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(v["tier"]["rpm"], 60);
    assert_eq!(v["tier"]["routes"][1], "rotation/*");
    let (ok, v, _) = run(&dir, &["tier", "get", "pro"]);
    assert!(ok);
    assert_eq!((v["tier"]["max_concurrency"].as_i64(), v["tier"]["max_tokens"].as_i64()), (Some(4), Some(4096)));
    // Replace: absent limits become unlimited.
    let (ok, v, _) = run(&dir, &["tier", "set", "pro", "--rpm", "120"]);
    assert!(ok);
    assert!(v["tier"]["tpm"].is_null() && v["tier"]["rpm"] == 120);
    for bad in [
        vec!["tier", "set", "Bad Name"],
        vec!["tier", "set", "x", "--rpm=-1"],
        vec!["tier", "set", "x", "--quota-usd", "NaN"],
    ] {
        let (ok, _, out) = run(&dir, &bad);
        assert!(!ok, "{bad:?}: {out}");
    }

    let (ok, _, out) = run(&dir, &["user", "create", "bob", "--tier", "nope"]);
    assert!(!ok && out.contains("no tier"), "{out}");
    let (ok, _, out) = run(&dir, &["user", "create", "bob", "--tier", "pro"]);
    assert!(ok, "{out}");
    let (ok, _, out) = run(&dir, &["tier", "delete", "pro"]);
    assert!(!ok && out.contains("on tier"), "{out}");
    let (ok, v, out) = run(&dir, &["user", "set-tier", "bob", "--clear"]);
    assert!(ok && v["user"]["tier"].is_null(), "{out}");
    let (ok, _, out) = run(&dir, &["user", "set-tier", "bob", "missing"]);
    assert!(!ok && out.contains("no tier"), "{out}");
    let (ok, v, out) = run(&dir, &["user", "set-tier", "bob", "pro"]);
    assert!(ok && v["user"]["tier"] == "pro", "{out}");
    let (ok, v, _) = run(&dir, &["tier", "list"]);
    assert!(ok && v["tiers"].as_array().unwrap().len() == 1);

    let (ok, v, out) =
        run(&dir, &["price", "set", "gpt-4", "--input", "30", "--output", "60", "--alias", "gpt-4-turbo,gpt-4-0613"]);
    assert!(ok, "{out}");
    assert_eq!(v["price"]["aliases"][0], "gpt-4-turbo");
    let (ok, _, out) = run(&dir, &["price", "set", "gpt-4", "--input", "25", "--output", "50", "--provider", "azure"]);
    assert!(ok, "{out}");
    let (ok, v, _) = run(&dir, &["price", "get", "gpt-4", "--provider", "azure"]);
    assert!(ok && v["price"]["input_per_million"] == 25.0);
    let (ok, v, _) = run(&dir, &["price", "list"]);
    assert!(ok && v["prices"].as_array().unwrap().len() == 2);
    let (ok, _, out) = run(&dir, &["price", "set", "m", "--input=-1", "--output", "1"]);
    assert!(!ok && out.contains("0 or more"), "{out}");
    let (ok, _, _) = run(&dir, &["price", "delete", "gpt-4", "--provider", "azure"]);
    assert!(ok);
    let (ok, _, out) = run(&dir, &["price", "get", "gpt-4", "--provider", "azure"]);
    assert!(!ok && out.contains("no price"), "{out}");
}

/// `token create --worker`: for an admin and a configured broker provider only.
#[test]
fn worker_tokens_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sy.toml"),
        "[database]\nurl = \"sqlite://sy.db?mode=rwc\"\n[log]\nlevel = \"warn\"\n[[providers]]\nid = \"gpu\"\ntype = \"broker\"\nmodels = [{ name = \"m\" }]\n",
    )
    .unwrap();
    assert!(run(&dir, &["user", "create", "root", "--role", "admin"]).0);
    assert!(run(&dir, &["user", "create", "ann"]).0);
    let (ok, v, out) = run(&dir, &["token", "create", "--user", "root", "--worker", "gpu"]);
    assert!(ok, "{out}");
    assert!(v["token"].as_str().is_some_and(|t| t.starts_with("sy-")), "{v}");
    let (ok, v, _) = run(&dir, &["token", "create", "--user", "ann", "--worker", "gpu"]);
    assert!(!ok && v["error"].as_str().is_some_and(|e| e.contains("own broker providers")), "{v}");
    let (ok, _, _) = run(&dir, &["token", "create", "--user", "root", "--worker", "gpu", "--rpm", "5"]);
    assert!(!ok, "a worker token has no limits");
}
