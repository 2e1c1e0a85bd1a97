//! The cluster harness: three `switchyard serve` processes on loopback ports behind nginx (the
//! shipped `nginx/nginx.conf`), sharing a Redis of their own and a Postgres or MariaDB
//! database, with the mock upstream in this process; and the TESTPLAN runs on it (L1, L2, F1,
//! F7–F13) in their CI form. `SWITCHYARD_SOAK=1` runs the longer soak forms.
//!
//! These tests load the machine, so they run one at a time (`serial`), and `tests/run.sh` runs
//! them after the rest of the suite (`cargo test --test it cluster:: -- --test-threads=1`).

#![allow(clippy::as_conversions, reason = "load figures: counts and durations as floats")]

pub mod load;

mod accuracy;
mod cache;
mod faults;
mod propagation;
mod sso;
mod throughput;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::services::{Nginx, PrivateRedis, free_port};
use crate::support::{Resp, get, post_json, send, unique};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One cluster test at a time (a failed test does not poison it).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The soak forms (`SWITCHYARD_SOAK=1`): the TESTPLAN's nightly durations.
pub fn soak() -> bool {
    std::env::var("SWITCHYARD_SOAK").is_ok_and(|v| v == "1")
}

/// `ci` seconds, or `soak` seconds in the soak form.
pub fn secs(ci: u64, soak_secs: u64) -> Duration {
    Duration::from_secs(if soak() { soak_secs } else { ci })
}

/// One `switchyard serve` process.
pub struct Node {
    pub name: String,
    pub port: u16,
    dir: PathBuf,
    admin: String,
    child: Option<Child>,
    starts: usize,
    /// Extra environment (`SWITCHYARD__…` overrides) for the next start.
    pub env: Vec<(String, String)>,
}

impl Node {
    /// Starts (or restarts) the process and waits until it listens.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.starts += 1;
        let out = self.dir.join(format!("{}.{}.out", self.name, self.starts));
        let err = self.dir.join(format!("{}.{}.err", self.name, self.starts));
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .current_dir(&self.dir)
            .args(["--config", &format!("{}.toml", self.name), "serve"])
            .env("SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN", &self.admin)
            .env_remove("SWITCHYARD_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("Switchyard listening on") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited ({status}): {}", self.name, std::fs::read_to_string(&err).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} did not start: {}", self.name, std::fs::read_to_string(&err).unwrap_or_default());
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`TERM`, `INT`, …) without waiting.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether the process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a cluster runs with.
pub struct Options {
    /// The database URL (a fresh database).
    pub db_url: String,
    /// Configuration appended to every node's (providers, rotations, …).
    pub extra: String,
    pub shutdown_timeout_secs: u64,
    pub nodes: usize,
    /// Environment for every node (`SWITCHYARD__…` overrides).
    pub env: Vec<(String, String)>,
    /// nginx's port, when the nodes' settings must name it (`server.public_url`).
    pub nginx_port: Option<u16>,
}

impl Options {
    pub fn new(db_url: String, extra: String) -> Self {
        Self { db_url, extra, shutdown_timeout_secs: 30, nodes: 3, env: Vec::new(), nginx_port: None }
    }
}

/// Three nodes behind nginx, on a Redis of their own and one database.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub nginx: Nginx,
    pub redis: PrivateRedis,
    pub db_url: String,
    pub admin: String,
    _dir: tempfile::TempDir,
}

/// A provider block for the mock upstream.
pub fn provider_toml(id: &str, base: &str, models: &[&str], extra: &str) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("{{ name = \"{m}\" }}")).collect();
    format!(
        "[[providers]]\nid = \"{id}\"\ntype = \"openai\"\nendpoint = \"{base}\"\nmodels = [{}]\n{extra}\n",
        models.join(", ")
    )
}

impl Cluster {
    pub async fn start(opts: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redis = PrivateRedis::start();
        let admin = format!("sy-{}", unique("cluster-admin-token").replace('_', "-"));
        let prefix = format!("{}:", unique("cl"));
        let mut nodes = Vec::new();
        for i in 1..=opts.nodes {
            let name = format!("n{i}");
            let port = free_port();
            let config = format!(
                "[server]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 1\nshutdown_timeout_secs = {st}\nnode_id = \"{name}\"\n\
                 [database]\nurl = \"{db}\"\nmax_connections = 16\n\
                 [redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\
                 [cluster]\nheartbeat_interval_ms = 500\n[catalog]\npoll_interval_ms = 1000\n\
                 [usage]\nflush_interval_ms = 20\n[log]\nlevel = \"warn\"\n{extra}\n",
                st = opts.shutdown_timeout_secs,
                db = opts.db_url,
                redis = redis.url,
                extra = opts.extra,
            );
            std::fs::write(dir.path().join(format!("{name}.toml")), config).unwrap();
            nodes.push(Node {
                name,
                port,
                dir: dir.path().to_owned(),
                admin: admin.clone(),
                child: None,
                starts: 0,
                env: opts.env.clone(),
            });
        }
        // The first node migrates the database and creates the admin; then the others join.
        nodes[0].start().await;
        for n in nodes.iter_mut().skip(1) {
            n.start().await;
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let nginx = match opts.nginx_port {
            Some(p) => Nginx::start_on(p, &ports),
            None => Nginx::start(&ports),
        };
        let cluster = Self { nodes, nginx, redis, db_url: opts.db_url, admin, _dir: dir };
        cluster.wait_registered(opts.nodes, Duration::from_secs(10)).await;
        cluster
    }

    /// A URL through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nginx.port)
    }

    /// The cluster's database.
    pub async fn store(&self) -> switchyard::store::Store {
        switchyard::store::Store::connect(&self.db_url, 4).await.expect("store")
    }

    /// An admin API call through nginx.
    pub async fn admin(&self, method: &str, path: &str, body: &Value) -> Resp {
        self.admin_at(&self.url(&format!("/admin/api{path}")), method, body).await
    }

    /// An admin API call to `base` (a node's or nginx's URL of the path).
    pub async fn admin_at(&self, url: &str, method: &str, body: &Value) -> Resp {
        let auth = format!("Bearer {}", self.admin);
        let body = if body.is_null() { String::new() } else { body.to_string() };
        send(method, url, &[("authorization", &auth), ("content-type", "application/json")], body).await
    }

    /// Creates a user (optionally on a tier) and a token for it; returns the token and its id.
    pub async fn user(&self, name: &str, tier: Option<&str>, token: Value) -> (String, i64) {
        let mut u = json!({"username": name});
        if let Some(t) = tier {
            u["tier"] = json!(t);
        }
        let r = self.admin("POST", "/users", &u).await;
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
        let mut t = token;
        t["user"] = json!(name);
        let r = self.admin("POST", "/tokens", &t).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (v["token"].as_str().unwrap().to_owned(), v["id"].as_i64().unwrap())
    }

    /// Waits until the registry lists `n` live nodes; returns how long it took.
    pub async fn wait_registered(&self, n: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < timeout {
            let r = get(&self.url("/admin/api/cluster"), &self.admin).await;
            if r.status == 200 {
                last = r.json();
                if last["nodes"].as_array().is_some_and(|a| a.len() == n) {
                    return start.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the registry did not list {n} nodes within {timeout:?}: {last}");
    }

    /// Waits until every usage record of `ids` is stored; returns those still missing.
    pub async fn await_usage(&self, ids: &[String], timeout: Duration) -> Vec<String> {
        let store = self.store().await;
        let mut missing: Vec<String> = ids.to_vec();
        let deadline = Instant::now() + timeout;
        loop {
            let mut still = Vec::new();
            for chunk in missing.chunks(500) {
                let found = stored_ids(&store, chunk).await;
                still.extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
            }
            missing = still;
            if missing.is_empty() || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Chat through nginx.
    pub async fn chat(&self, token: &str, model: &str) -> Resp {
        post_json(&self.url("/v1/chat/completions"), token, &crate::support::chat(model, "hi")).await
    }
}

/// Chat completions through nginx at `rate` per second for `duration`, in the background;
/// `make(i)` gives the i-th request's token and body.
pub fn background_load(
    cluster: &Cluster,
    rate: f64,
    duration: Duration,
    make: impl Fn(usize) -> (String, Value) + 'static,
) -> actix_web::rt::task::JoinHandle<Vec<load::Outcome>> {
    let (client, url) = (load::client(), cluster.url("/v1/chat/completions"));
    actix_web::rt::spawn(load::fixed_rate(rate, duration, move |i, _| {
        let (token, body) = make(i);
        load::request(client.clone(), url.clone(), token, body)
    }))
}

/// Probes `token` on every running node directly until each answers `status`; returns the
/// time taken, or `None` after `timeout`.
pub async fn until_all(
    cluster: &Cluster,
    token: &str,
    model: &str,
    status: u16,
    timeout: Duration,
) -> Option<Duration> {
    until_all_body(cluster, token, &crate::support::chat(model, "probe"), status, timeout).await
}

/// [`until_all`] with a request body of its own.
pub async fn until_all_body(
    cluster: &Cluster,
    token: &str,
    body: &Value,
    status: u16,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut pending: Vec<usize> = (0..cluster.nodes.len()).filter(|i| cluster.nodes[*i].running()).collect();
    while start.elapsed() < timeout {
        let mut still = Vec::new();
        for i in pending {
            let r = post_json(&cluster.nodes[i].url("/v1/chat/completions"), token, body).await;
            if r.status != status {
                still.push(i);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Which of `ids` have a usage record.
pub async fn stored_ids(store: &switchyard::store::Store, ids: &[String]) -> std::collections::HashSet<String> {
    use sea_orm::{ConnectionTrait as _, Statement};
    if ids.is_empty() {
        return Default::default();
    }
    let backend = store.conn().get_database_backend();
    let list: Vec<String> = ids.iter().map(|id| format!("'{}'", id.replace('\'', ""))).collect();
    let sql = format!("SELECT request_id FROM usage_records WHERE request_id IN ({})", list.join(","));
    let rows = store.conn().query_all_raw(Statement::from_string(backend, sql)).await.expect("usage query");
    rows.iter().filter_map(|r| r.try_get::<String>("", "request_id").ok()).collect()
}

/// Usage record counts per request id (duplicates show as counts above one).
pub async fn usage_counts(store: &switchyard::store::Store) -> std::collections::HashMap<String, i64> {
    use sea_orm::{ConnectionTrait as _, Statement};
    let backend = store.conn().get_database_backend();
    let sql = "SELECT request_id, COUNT(*) AS n FROM usage_records GROUP BY request_id";
    let rows = store.conn().query_all_raw(Statement::from_string(backend, sql)).await.expect("usage query");
    rows.iter()
        .filter_map(|r| Some((r.try_get::<String>("", "request_id").ok()?, r.try_get::<i64>("", "n").ok()?)))
        .collect()
}

/// Percentile (0–100) of durations, in milliseconds.
pub fn percentile_ms(values: &mut [Duration], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort();
    let rank = ((p / 100.0) * (values.len() as f64 - 1.0)).round() as usize;
    values[rank.min(values.len() - 1)].as_secs_f64() * 1000.0
}
