//! The dashboard in headless Chromium (TESTPLAN S6's real half, issue 13): a person signs in
//! with a password, finds the figures of requests proxied a moment before, walks every page,
//! creates a token with the form, signs out, and signs in again with SSO at a real OpenID
//! provider (panva's `oidc-provider`, PKCE required) — its own login and consent pages included.
//! Every page is saved as a 1280×800 screenshot when `SWITCHYARD_TEST_SCREENSHOTS` names a
//! directory (tests/run.sh: `tests/screenshots/`).

use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard::config::{OidcSettings, Secret};
use switchyard::control::NewTokenRequest;
use switchyard::types::Role;

use crate::support::services::free_port;
use crate::support::webdriver::Chrome;
use crate::support::{TestApp, chat, post_json, service_url};

/// panva's provider, from the directory tests/run.sh installed it in.
struct Provider(std::process::Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn provider(port: u16, redirect: &str, secret: &str) -> Provider {
    let dir = service_url("SWITCHYARD_TEST_OIDC_PROVIDER_DIR");
    let child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("REDIRECT_URI", redirect)
        .env("CLIENT_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node (tests/run.sh installs it)");
    let p = Provider(child);
    let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    let client = awc::Client::default();
    for _ in 0..100 {
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("oidc-provider did not start");
}

#[actix_web::test]
async fn both_logins_end_to_end_in_chromium() {
    let shots = std::env::var("SWITCHYARD_TEST_SCREENSHOTS").ok().map(std::path::PathBuf::from);
    let shots = shots.as_deref();
    let (port, op_port) = (free_port(), free_port());
    let redirect = format!("http://127.0.0.1:{port}/dashboard/oidc/callback");
    let secret = "gw-dashboard-secret-e2e";
    let _op = provider(op_port, &redirect, secret).await;
    let oidc = OidcSettings {
        issuer: format!("http://127.0.0.1:{op_port}"),
        client_id: "gw-dashboard".into(),
        client_secret: Some(Secret::new(secret.to_owned())),
        redirect_url: Some(redirect.clone()),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        allowed_domains: vec!["example.com".into()],
        admin_claim: Some("groups".into()),
        admin_values: vec!["gw-admins".into()],
        link_by_email: false,
        default_tier: None,
        label: "Sign in with SSO".into(),
    };
    let app = TestApp::spawn(move |s| {
        s.server.port = port;
        s.oidc = Some(oidc);
        s.providers.push(switchyard::config::ProviderConfig {
            kind: switchyard::types::ProviderKind::Mock,
            endpoint: None,
            ..crate::support::openai_provider("mock", "", &["m", "m-large"])
        });
    })
    .await;
    let c = app.control().await;
    let admin = c.get_user("admin").await.unwrap();
    c.set_password(admin.id, "admin-password-1").await.unwrap();
    for (model, input, output) in [("m", 3.0, 15.0), ("m-large", 10.0, 40.0)] {
        c.put_price(&switchyard::store::PriceRow {
            model: model.into(),
            provider: String::new(),
            input_per_million: input,
            output_per_million: output,
            cached_input_per_million: None,
            cache_write_per_million: None,
            aliases: vec![],
        })
        .await
        .unwrap();
    }
    c.create_user("carol", Role::User, None, None).await.unwrap();
    // The node sees the prices at its next catalog poll.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (carol, _) = c
        .create_token(NewTokenRequest { name: "carol-ci".into(), ..NewTokenRequest::for_user("carol") })
        .await
        .unwrap();
    let mut last = String::new();
    for (i, model) in ["m", "m", "m-large", "m", "m-large"].iter().enumerate() {
        let r = post_json(&app.url("/v1/chat/completions"), &carol, &chat(model, &format!("request {i}"))).await;
        assert_eq!(r.status, 200);
        last = r.header("x-request-id").unwrap().to_owned();
    }
    app.usage(&last).await;

    let mut b = Chrome::start().await;
    // A page without a session leads to the login form.
    b.goto(&app.url("/dashboard/usage")).await;
    assert!(b.url().await.ends_with("/dashboard/login"), "{}", b.url().await);
    b.screenshot(shots, "01-login").await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", "wrong-password").await;
    b.click("button[type=submit]").await;
    assert!(b.source().await.contains("Wrong username or password."));
    b.screenshot(shots, "02-login-failed").await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", "admin-password-1").await;
    b.click("button[type=submit]").await;
    assert!(b.url().await.ends_with("/dashboard"), "{}", b.url().await);
    // The overview shows the five requests just proxied, and their charts.
    let html = b.source().await;
    assert!(html.contains("<span>Requests</span><strong>5</strong>"), "{html}");
    assert!(html.contains("<td>m-large</td>") || html.contains("m-large"), "{html}");
    assert!(html.contains("class=\"plot\""));
    b.screenshot(shots, "03-overview").await;

    let pages = [
        ("/dashboard?period=7d&group=user", "04-overview-by-user"),
        ("/dashboard/usage", "05-usage"),
        ("/dashboard/usage?model=m-large", "06-usage-filtered"),
        ("/dashboard/requests", "07-requests"),
        (&format!("/dashboard/requests/{last}"), "08-request"),
        ("/dashboard/routes", "10-routes"),
        ("/dashboard/users", "11-users"),
        ("/dashboard/users/carol", "12-user"),
        ("/dashboard/tiers", "13-tiers"),
        ("/dashboard/prices", "14-prices"),
        ("/dashboard/catalog", "15-catalog"),
        ("/dashboard/cluster", "16-cluster"),
        ("/dashboard/account", "17-account"),
        ("/dashboard/no-such-page", "18-not-found"),
    ];
    for (path, name) in pages {
        b.goto(&app.url(path)).await;
        let html = b.source().await;
        assert!(!html.contains("\"error\":"), "{path} rendered JSON");
        b.screenshot(shots, name).await;
    }
    assert!(b.source().await.contains("Not Found"));
    b.goto(&app.url(&format!("/dashboard/requests/{last}"))).await;
    assert!(b.source().await.contains("m-large"));
    // A token made with the form is shown once.
    b.goto(&app.url("/dashboard/tokens")).await;
    b.type_into("input[name=name]", "laptop").await;
    b.type_into("input[name=rpm]", "60").await;
    b.click("form.grid button[type=submit]").await;
    let html = b.source().await;
    assert!(html.contains("shown this once"), "{html}");
    b.screenshot(shots, "09-tokens").await;
    // A tier made with the form.
    b.goto(&app.url("/dashboard/tiers")).await;
    b.type_into("input[name=name]", "team").await;
    b.type_into("input[name=rpm]", "120").await;
    b.click("form.grid button[type=submit]").await;
    assert!(b.source().await.contains("<td>team</td>"));

    // Sign out, then in with SSO at the provider (its login and consent pages).
    b.click("form.logout button").await;
    assert!(b.url().await.ends_with("/dashboard/login"));
    b.click("a[href='/dashboard/oidc/login']").await;
    assert!(b.url().await.starts_with(&format!("http://127.0.0.1:{op_port}/")), "{}", b.url().await);
    b.screenshot(shots, "19-sso-provider").await;
    b.type_into("input[name=login]", "alice").await;
    b.type_into("input[name=password]", "any").await;
    b.click("button[type=submit]").await;
    // Then the provider's consent page; the browser ends on the dashboard.
    if b.source().await.contains(r#"name="prompt" value="consent""#) {
        b.screenshot(shots, "19-sso-consent").await;
        b.click("button[type=submit]").await;
    }
    let url = b.url().await;
    assert!(url.ends_with("/dashboard"), "{url}: {}", b.source().await);
    let html = b.source().await;
    assert!(html.contains("alice · admin"), "{html}");
    assert!(html.contains("<span>Requests</span><strong>5</strong>"));
    b.screenshot(shots, "20-sso-overview").await;
    let alice = c.get_user("alice").await.unwrap();
    assert_eq!((alice.role.as_str(), alice.email.as_deref()), ("admin", Some("alice@example.com")));
    b.quit().await;
    app.stop().await;
}
