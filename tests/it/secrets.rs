//! S8: secrets never appear in logs, metrics or responses, even at TRACE.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{get, post_json, send};

fn windows(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(8).map(|w| w.iter().collect()).collect()
}

#[actix_web::test]
async fn canaries_never_reach_logs_metrics_or_bodies() {
    let mock = MockUpstream::start(1);
    let key = "sk-canary-KEY-7f3a9b1c5d2e8f4a6b0c";
    let admin = format!("sy-{}", "c0ffee".repeat(8));
    let prompt = "CANARY-PROMPT-zq81xv";
    // The dashboard's: the OIDC client secret, a password, an access token, session cookies.
    let oidc_secret = "oidc-CANARY-secret-4q9zWb";
    let password = "CANARY-pass-x7Yq2mKd";
    let access = "at-CANARY-access-9d3kQp";
    let idp = crate::support::idp::MockIdp::start_with(oidc_secret);
    // Traces go to the test's OTLP receiver: every exported attribute is checked too.
    let service = format!("sy-s8-{}", uuid::Uuid::now_v7().simple());
    let otlp = crate::support::service_url("SWITCHYARD_TEST_OTLP_GRPC");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sy.toml"),
        format!(
            "[server]\nport = 0\nworkers = 1\n[database]\nurl = \"sqlite://sy.db?mode=rwc\"\n[log]\nlevel = \"trace\"\n\
             [telemetry]\notlp_endpoint = \"{otlp}\"\nservice_name = \"{service}\"\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"{client}\"\nclient_secret = \"$SY_CANARY_OIDC\"\n\
             redirect_url = \"http://127.0.0.1:1/dashboard/oidc/callback\"\nallowed_domains = [\"example.com\"]\n\
             [[providers]]\nid = \"local\"\ntype = \"openai\"\nendpoint = \"{}\"\napi_key = \"$SY_CANARY_KEY\"\nmodels = [{{ name = \"qwen\" }}]\n",
            mock.base(),
            issuer = idp.issuer,
            client = crate::support::idp::CLIENT_ID,
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .args(["--config", "sy.toml", "serve"])
        .env("SY_CANARY_KEY", key)
        .env("SY_CANARY_OIDC", oidc_secret)
        .env("SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN", &admin)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx2.send(format!("STDERR-END\n{all}"));
    });
    let mut logs = String::new();
    let mut port = 0u16;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while port == 0 && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(p) = line.strip_prefix("Switchyard listening on http://127.0.0.1:") {
                port = p.trim().parse().unwrap();
            }
            logs.push_str(&line);
            logs.push('\n');
        }
    }
    assert!(port != 0, "the node did not start: {logs}");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let mut bodies = String::new();
    let r = post_json(
        &url("/v1/chat/completions"),
        &admin,
        &json!({"model": "qwen", "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    bodies.push_str(&r.text());
    let r = post_json(
        &url("/v1/chat/completions"),
        &admin,
        &json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    bodies.push_str(&r.text());
    mock.plan(Plan {
        status: 401,
        error_body: Some(format!(r#"{{"error":{{"message":"Incorrect API key provided: {key}"}}}}"#)),
        ..Plan::default()
    });
    let r = post_json(
        &url("/v1/chat/completions"),
        &admin,
        &json!({"model": "qwen", "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(r.status, 502);
    bodies.push_str(&r.text());
    let wrong = format!("Bearer sy-{}", "d".repeat(64));
    bodies.push_str(
        &send(
            "POST",
            &url("/v1/chat/completions"),
            &[("authorization", &wrong), ("content-type", "application/json")],
            "{}",
        )
        .await
        .text(),
    );
    bodies.push_str(
        &post_json(&url("/v1/chat/completions"), &admin, &json!({"model": "qwen", "messages": prompt})).await.text(),
    );
    bodies.push_str(&get(&url("/metrics"), &admin).await.text());

    // The dashboard: a password login, pages, a logout; an SSO login.
    let control = switchyard::control::Control::new(
        switchyard::store::Store::connect(&format!("sqlite://{}/sy.db", dir.path().display()), 1).await.unwrap(),
        switchyard::shared::connect(None, "", 1).await.unwrap(),
    );
    let admin_user = control.get_user("admin").await.unwrap();
    control.set_password(admin_user.id, password).await.unwrap();
    let mut cookies = Vec::new();
    let mut b = crate::support::browser::Browser::new(&url(""));
    let r = crate::support::browser::login(&mut b, &url(""), "admin", password).await;
    assert_eq!(r.status, 303, "{}", r.text());
    cookies.push(b.cookies["sy_session"].clone());
    for p in ["/dashboard", "/dashboard/usage", "/dashboard/tokens", "/dashboard/catalog", "/dashboard/account"] {
        let r = b.get(&url(p)).await;
        assert_eq!(r.status, 200);
        bodies.push_str(&r.text());
    }
    let csrf = crate::support::browser::csrf_of(&b.get(&url("/dashboard")).await.text());
    assert_eq!(b.post(&url("/dashboard/logout"), &[("csrf", &csrf)]).await.status, 303);
    let mut sso = crate::support::browser::Browser::new(&url(""));
    let r = sso.get(&url("/dashboard/oidc/login")).await;
    let location = r.header("location").unwrap().to_owned();
    let q: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(location.split_once('?').unwrap().1).unwrap();
    idp.grant(
        "code-s8",
        &q["code_challenge"],
        json!({"access_token": access, "token_type": "Bearer",
               "id_token": idp.id_token("sub-s8", &q["nonce"], json!({"email": "s8@example.com", "email_verified": true}))}),
    );
    let cb = serde_urlencoded::to_string([("code", "code-s8"), ("state", q["state"].as_str())]).unwrap();
    let r = sso.get(&url(&format!("/dashboard/oidc/callback?{cb}"))).await;
    assert_eq!(r.status, 303, "{}", r.text());
    cookies.push(sso.cookies["sy_session"].clone());
    bodies.push_str(&sso.get(&url("/dashboard")).await.text());
    assert_eq!(
        mock.received()[0].header("authorization"),
        Some(format!("Bearer {key}").as_str()),
        "the key must reach the upstream"
    );

    // SIGTERM drains and exits; then every line it wrote is checked.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    out_thread.join().unwrap();
    err_thread.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(logs.contains("STDERR-END"));
    assert!(logs.len() > 2_000, "TRACE logging produced too little to be a real check: {} bytes", logs.len());
    let spans = serde_json::to_string(&crate::support::node::spans(&service).await).unwrap();
    assert!(spans.contains("gen_ai.usage.input_tokens"), "no attempt span was exported: {spans}");
    let mut canaries = vec![
        ("provider key", key.to_owned()),
        ("admin token", admin.clone()),
        ("prompt", prompt.to_owned()),
        ("OIDC client secret", oidc_secret.to_owned()),
        ("password", password.to_owned()),
        ("access token", access.to_owned()),
    ];
    canaries.extend(cookies.into_iter().map(|c| ("session cookie", c)));
    for (what, secret) in &canaries {
        for w in windows(secret) {
            assert!(!logs.contains(&w), "{what} fragment `{w}` is in the logs");
            assert!(!spans.contains(&w), "{what} fragment `{w}` is in an exported span");
            if *what != "prompt" && *what != "session cookie" {
                assert!(!bodies.contains(&w), "{what} fragment `{w}` is in a response body");
            }
        }
    }
}
