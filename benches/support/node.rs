//! A `switchyard` node for the benchmarks: its CLI over the bench's configuration, and `serve`
//! as a child process. Included by each bench with `#[path]`.
#![allow(dead_code, clippy::allow_attributes, reason = "shared by the benches; each uses a part")]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// Runs a CLI command against `dir/bench.toml` and returns its JSON answer.
pub fn cli(bin: &str, dir: &tempfile::TempDir, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["--config", "bench.toml", "--json"])
        .args(args)
        .output()
        .expect("run the switchyard CLI");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("null").to_owned();
    serde_json::from_str(&last).expect("the CLI's JSON")
}

/// Starts `switchyard serve` on `dir/bench.toml` and returns it with the port it listens on.
pub fn serve(bin: &str, dir: &tempfile::TempDir) -> (Child, u16) {
    let mut child = Command::new(bin)
        .current_dir(dir.path())
        .args(["--config", "bench.toml", "serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start switchyard (build it with cargo bench, which builds the binary)");
    let stdout = child.stdout.take().expect("the node's stdout");
    let mut port = 0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(p) = line.strip_prefix("Switchyard listening on http://127.0.0.1:") {
            port = p.trim().parse().expect("a port");
            break;
        }
    }
    assert!(port != 0, "the gateway did not start");
    (child, port)
}

/// Starts a helper process (`program args…`, quiet) and waits up to 2.5 s for it to listen on
/// `port`; `None` when it cannot start or does not listen.
pub fn spawn_listening(program: &str, args: &[&str], dir: &std::path::Path, port: u16) -> Option<Child> {
    let child =
        Command::new(program).args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}
