//! Services of a test's own, which it may stop and start again on the same port: Redis,
//! PostgreSQL and MariaDB (their binaries are installed by `tests/run.sh`), and nginx running
//! the shipped `nginx/nginx.conf`. The cluster benchmark includes this file too.
#![allow(dead_code, clippy::allow_attributes, reason = "shared between the test binary and the benchmark")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port for a server that starts later (or starts again on it): below Linux's
/// ephemeral range (32768–60999), which outgoing connections take their local ports from — a
/// port of that range, free when picked, can be some connection's by the time the server binds
/// it (seen: a cluster node's "Address already in use").
pub fn free_port() -> u16 {
    let mut seed = [0u8; 2];
    for _ in 0..1000 {
        getrandom::fill(&mut seed).unwrap();
        let port = 20_000 + u16::from_le_bytes(seed) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, what: &str) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not open 127.0.0.1:{port}");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// `cmd` as `user` when running as root (PostgreSQL and MariaDB refuse to run as root).
fn as_user(user: &str, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A world-traversable temporary directory (the database servers run as their own users).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A redis-server of its own (persistence off: a restart starts empty).
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = free_port();
        let mut r =
            Self { child: None, port, url: format!("redis://127.0.0.1:{port}/0"), dir: tempfile::tempdir().unwrap() };
        r.restart();
        r
    }

    /// Starts it again (empty) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by tests/run.sh)");
        self.child = Some(child);
        wait_port(self.port, "redis-server");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of its own (fsync off), as the `postgres` user when running as root.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    sock: PathBuf,
    pub port: u16,
    pub url: String,
    running: bool,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL (installed by tests/run.sh)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        let bin = versions.pop().expect("an initdb under /usr/lib/postgresql");
        let dir = open_tempdir();
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres", &home.display().to_string()]);
                    c
                },
                "chown",
            );
        }
        let data = home.join("data");
        let mut init = as_user("postgres", &bin.join("initdb").display().to_string());
        init.args(["-D", &data.display().to_string(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(init, "initdb");
        let port = free_port();
        let mut pg = Self {
            bin,
            data,
            log: home.join("log"),
            sock: home,
            port,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            running: false,
            _dir: dir,
        };
        pg.resume();
        pg
    }

    fn pg_ctl(&self) -> Command {
        let mut c = as_user("postgres", &self.bin.join("pg_ctl").display().to_string());
        c.args(["-D", &self.data.display().to_string()]);
        c
    }

    /// Starts the stopped server again on the same port.
    pub fn resume(&mut self) {
        let mut c = self.pg_ctl();
        c.args([
            "-l",
            &self.log.display().to_string(),
            "-w",
            "-o",
            &format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                self.port,
                self.sock.display()
            ),
            "start",
        ]);
        run(c, "pg_ctl start");
        self.running = true;
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop(&mut self) {
        let mut c = self.pg_ctl();
        c.args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop");
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let mut c = self.pg_ctl();
            c.args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
            let _ = c.status();
        }
    }
}

/// A MariaDB server of its own, as the `mysql` user when running as root; database `sy`, user
/// `sy`/`sy`.
pub struct PrivateMariaDb {
    child: Option<Child>,
    home: PathBuf,
    pub port: u16,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl PrivateMariaDb {
    pub fn start() -> Self {
        let dir = open_tempdir();
        let home = dir.path().join("my");
        std::fs::create_dir(&home).unwrap();
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["mysql:mysql", &home.display().to_string()]);
            run(c, "chown");
        }
        let mut install = Command::new("mariadb-install-db");
        install.args([
            "--no-defaults",
            "--user=mysql",
            &format!("--datadir={}", home.join("data").display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
        run(install, "mariadb-install-db");
        let port = free_port();
        let mut db = Self { child: None, home, port, url: format!("mysql://sy:sy@127.0.0.1:{port}/sy"), _dir: dir };
        db.resume();
        let mut c = Command::new("mariadb");
        c.args(["--no-defaults", "-S", &db.home.join("sock").display().to_string(), "-uroot", "-e"])
            .arg("CREATE DATABASE sy; CREATE USER 'sy'@'%' IDENTIFIED BY 'sy'; GRANT ALL ON *.* TO 'sy'@'%';");
        run(c, "mariadb create database");
        db
    }

    /// Starts the stopped server again on the same port.
    pub fn resume(&mut self) {
        let mariadbd = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mariadbd");
        let mut c = as_user("mysql", mariadbd);
        c.args([
            "--no-defaults",
            &format!("--datadir={}", self.home.join("data").display()),
            &format!("--socket={}", self.home.join("sock").display()),
            &format!("--port={}", self.port),
            "--bind-address=127.0.0.1",
            &format!("--log-error={}", self.home.join("err.log").display()),
            &format!("--pid-file={}", self.home.join("pid").display()),
            // Commits reach the OS at once (flushed to disk each second): a killed server loses
            // no acknowledged commit, as a durable production server would not.
            "--innodb-flush-log-at-trx-commit=2",
            "--skip-log-bin",
            "--max-connections=200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.child = Some(c.spawn().expect("mariadbd (installed by tests/run.sh)"));
        wait_port(self.port, "mariadbd");
    }

    /// Stops the server (SIGKILL: as abrupt as a crash or a network cut).
    pub fn stop(&mut self) {
        let pid = std::fs::read_to_string(self.home.join("pid")).unwrap_or_default();
        if !pid.trim().is_empty() {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.home.join("pid"));
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mariadbd still answers on {}", self.port);
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx running the shipped `nginx/nginx.conf` with its listen addresses and node list
/// replaced, and a throwaway self-signed certificate for its HTTPS (HTTP/2) listener.
pub struct Nginx {
    child: Child,
    pub port: u16,
    /// The HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls_port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(nodes: &[u16]) -> Self {
        Self::start_on(free_port(), nodes)
    }

    /// Starts listening on `port` (picked before the nodes, whose settings name it).
    pub fn start_on(port: u16, nodes: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls_port = free_port();
        configure(dir.path(), port, tls_port, nodes);
        let out = nginx(dir.path(), &["-t"]).output().unwrap();
        assert!(out.status.success(), "nginx -t: {}", String::from_utf8_lossy(&out.stderr));
        let child =
            nginx(dir.path(), &["-g", "daemon off;"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        wait_port(port, "nginx");
        Self { child, port, tls_port, _dir: dir }
    }
}

impl Nginx {
    /// `nginx -s quit`: a graceful stop (SIGQUIT to the master).
    pub fn quit(&self) {
        let ok = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits up to `timeout` for nginx to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and exits (SIGKILL would orphan the workers,
        // still holding the listening socket).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A self-signed certificate for localhost at `dir/tls/server.{crt,key}`.
pub fn self_signed(dir: &Path) {
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let mut c = Command::new("openssl");
    c.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("tls/server.key"))
        .arg("-out")
        .arg(dir.join("tls/server.crt"));
    run(c, "openssl req");
}

/// Writes the shipped configuration with its listen addresses and node list replaced.
pub fn configure(dir: &Path, listen: u16, tls_listen: u16, nodes: &[u16]) {
    self_signed(dir);
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/nginx.conf")).unwrap();
    let mut out = String::new();
    let mut in_upstream = false;
    for line in shipped.lines() {
        let t = line.trim_start();
        if t.starts_with("upstream switchyard") {
            in_upstream = true;
        }
        if in_upstream && t.starts_with("server 127.0.0.1:") {
            continue;
        }
        if in_upstream && t.starts_with("keepalive") {
            for p in nodes {
                out.push_str(&format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"));
            }
            in_upstream = false;
        }
        if t.starts_with("listen 127.0.0.1:8080;") {
            out.push_str(&format!("        listen 127.0.0.1:{listen};\n"));
            continue;
        }
        if t.starts_with("listen 127.0.0.1:8443 ") {
            out.push_str(&format!("        listen 127.0.0.1:{tls_listen} ssl http2;\n"));
            continue;
        }
        if t.starts_with("worker_processes") {
            out.push_str("worker_processes 1;\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("nginx.conf"), out).unwrap();
}

/// The nginx binary with `-p dir -c nginx.conf`.
pub fn nginx(dir: &Path, args: &[&str]) -> Command {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("nginx");
    let mut c = Command::new(bin);
    c.args(["-p", &format!("{}/", dir.display()), "-c", "nginx.conf"]).args(args);
    c
}
