//! OIDC login against a scriptable provider on loopback: the crafted flows of TESTPLAN S6. None
//! of the bad ones may open a session or create a user; every authorize request carries PKCE
//! S256, `state` and `nonce`; userinfo answers are never shared between access tokens.

use std::collections::HashMap;

use hmac::Mac as _;
use serde_json::{Value, json};
use switchyard::config::{OidcSettings, Secret};

use crate::support::TestApp;
use crate::support::browser::Browser;
use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, MockIdp};
use crate::support::services::free_port;

async fn app_with(idp: &MockIdp, edit: impl FnOnce(&mut OidcSettings)) -> TestApp {
    let port = free_port();
    let mut o = OidcSettings {
        issuer: idp.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(Secret::new(CLIENT_SECRET.to_owned())),
        redirect_url: Some(format!("http://127.0.0.1:{port}/dashboard/oidc/callback")),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        allowed_domains: vec!["example.com".into()],
        admin_claim: Some("groups".into()),
        admin_values: vec!["gw-admins".into()],
        link_by_email: true,
        default_tier: None,
        label: "Sign in with SSO".into(),
    };
    edit(&mut o);
    TestApp::spawn(move |s| {
        s.server.port = port;
        s.oidc = Some(o);
    })
    .await
}

/// A login started in a fresh browser: the provider's parameters.
struct Started {
    browser: Browser,
    q: HashMap<String, String>,
}

async fn start(app: &TestApp) -> Started {
    let mut browser = Browser::new(&app.url(""));
    let r = browser.get(&app.url("/dashboard/oidc/login")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").unwrap().to_owned();
    let query = location.split_once('?').unwrap().1;
    let q: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap();
    assert!(browser.cookies.contains_key("sy_oidc"), "the login is bound to this browser");
    // What every login asks for: the code flow, PKCE S256, state, nonce, the configured redirect.
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 16 && q["nonce"].len() >= 16);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{}/dashboard/oidc/callback", app.url("")));
    assert_eq!(q["scope"], "openid email profile");
    Started { browser, q }
}

impl Started {
    fn state(&self) -> &str {
        &self.q["state"]
    }
    fn nonce(&self) -> &str {
        &self.q["nonce"]
    }
    fn challenge(&self) -> &str {
        &self.q["code_challenge"]
    }
    async fn callback(&mut self, app: &TestApp, query: &str) -> crate::support::Resp {
        self.browser.get(&app.url(&format!("/dashboard/oidc/callback?{query}"))).await
    }
    async fn finish(&mut self, app: &TestApp, code: &str) -> crate::support::Resp {
        let q = serde_urlencoded::to_string([("code", code), ("state", self.state())]).unwrap();
        self.callback(app, &q).await
    }
}

fn answer(id_token: &str, access: &str) -> Value {
    json!({"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": id_token})
}

fn good(email: &str) -> Value {
    json!({"email": email, "email_verified": true})
}

async fn users(app: &TestApp) -> usize {
    app.control().await.list_users().await.unwrap().len()
}

/// Asserts a refused login: 403, no session, no user created.
async fn refused(app: &TestApp, s: &Started, r: &crate::support::Resp, what: &str, before: usize) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"), "{what}");
    assert!(!s.browser.cookies.contains_key("sy_session"), "{what}: a session was opened");
    assert_eq!(users(app).await, before, "{what}: a user was created");
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hs256(key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

#[actix_web::test]
async fn s6_crafted_oidc_flows_never_open_a_session() {
    let idp = MockIdp::start();
    let app = app_with(&idp, |_| {}).await;
    let mut n = 0;
    let mut code = || {
        n += 1;
        format!("code-{n}")
    };

    // 1. A good login: a user is provisioned and signed in.
    let before = users(&app).await;
    let mut s = start(&app).await;
    let c = code();
    idp.grant(&c, s.challenge(), answer(&idp.id_token("sub-alice", s.nonce(), good("alice@example.com")), "at-1"));
    // (The flows below start about 22 logins from this address: under the 30 a minute.)
    let r = s.finish(&app, &c).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/dashboard")), "{}", r.text());
    assert!(s.browser.cookies.contains_key("sy_session"));
    assert!(!s.browser.cookies.contains_key("sy_oidc"), "the binding cookie is spent");
    assert_eq!(s.browser.get(&app.url("/dashboard")).await.status, 200);
    assert_eq!(users(&app).await, before + 1);
    let alice = app.control().await.get_user("alice").await.unwrap();
    assert_eq!((alice.role.as_str(), alice.email.as_deref()), ("user", Some("alice@example.com")));
    // 2. The same state and code again (a replayed callback): refused.
    let mut replay = Started { browser: Browser::new(&app.url("")), q: s.q.clone() };
    replay.browser.cookies = s.browser.cookies.clone();
    replay.browser.cookies.remove("sy_session");
    let r = replay.finish(&app, &c).await;
    refused(&app, &replay, &r, "replayed state", before + 1).await;
    // Signing in again finds the same user (no second account).
    let mut s = start(&app).await;
    let c = code();
    idp.grant(&c, s.challenge(), answer(&idp.id_token("sub-alice", s.nonce(), good("alice@example.com")), "at-2"));
    assert_eq!(s.finish(&app, &c).await.status, 303);
    let before = users(&app).await;

    // The flows that must fail. Each gets a fresh login; `token` builds the provider's answer.
    type Craft = Box<dyn Fn(&MockIdp, &Started) -> Value>;
    let now = chrono::Utc::now().timestamp();
    let other_key = {
        let out = std::process::Command::new("openssl").args(["genrsa", "-traditional", "2048"]).output().unwrap();
        openidconnect::core::CoreRsaPrivateSigningKey::from_pem(
            &String::from_utf8(out.stdout).unwrap(),
            Some(openidconnect::JsonWebKeyId::new("k1".into())),
        )
        .unwrap()
    };
    let other_key = std::sync::Arc::new(other_key);
    let public_pem = {
        let mut child = std::process::Command::new("openssl")
            .args(["rsa", "-pubout"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(crate::support::idp::rsa_pem().as_bytes()).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let crafted: Vec<(&str, Craft)> = vec![
        ("wrong nonce", Box::new(|i, _| answer(&i.id_token("sub-x", "not-the-nonce", good("x@example.com")), "at"))),
        (
            "alg none",
            Box::new(move |i, s| {
                let claims = json!({"iss": i.issuer, "sub": "sub-x", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                                    "nonce": s.nonce(), "email": "x@example.com", "email_verified": true});
                let t = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
                answer(&t, "at")
            }),
        ),
        (
            "HS256 keyed with the provider's public key",
            Box::new({
                let public_pem = public_pem.clone();
                move |i, s| {
                    let claims = json!({"iss": i.issuer, "sub": "sub-x", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                                        "nonce": s.nonce(), "email": "x@example.com", "email_verified": true});
                    answer(&hs256(&public_pem, &json!({"alg": "HS256", "kid": "k1"}), &claims), "at")
                }
            }),
        ),
        (
            "HS256 keyed with the client secret",
            Box::new(move |i, s| {
                let claims = json!({"iss": i.issuer, "sub": "sub-x", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                                    "nonce": s.nonce(), "email": "x@example.com", "email_verified": true});
                answer(&hs256(CLIENT_SECRET.as_bytes(), &json!({"alg": "HS256"}), &claims), "at")
            }),
        ),
        (
            "wrong issuer",
            Box::new(|i, s| {
                answer(
                    &i.id_token(
                        "sub-x",
                        s.nonce(),
                        json!({"iss": "http://evil.example", "email": "x@example.com", "email_verified": true}),
                    ),
                    "at",
                )
            }),
        ),
        (
            "wrong audience",
            Box::new(|i, s| {
                answer(
                    &i.id_token(
                        "sub-x",
                        s.nonce(),
                        json!({"aud": "someone-else", "email": "x@example.com", "email_verified": true}),
                    ),
                    "at",
                )
            }),
        ),
        (
            "expired",
            Box::new(move |i, s| {
                answer(
                    &i.id_token(
                        "sub-x",
                        s.nonce(),
                        json!({"iat": now - 7200, "exp": now - 3600, "email": "x@example.com", "email_verified": true}),
                    ),
                    "at",
                )
            }),
        ),
        (
            "tampered payload",
            Box::new(|i, s| {
                let t = i.id_token("sub-x", s.nonce(), good("x@example.com"));
                let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
                let mut claims: Value = serde_json::from_slice(
                    &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1]).unwrap(),
                )
                .unwrap();
                claims["sub"] = json!("sub-admin");
                parts[1] = b64(claims.to_string().as_bytes());
                answer(&parts.join("."), "at")
            }),
        ),
        (
            "signed by another key with the same kid",
            Box::new({
                let other_key = std::sync::Arc::clone(&other_key);
                move |i, s| {
                    use openidconnect::PrivateSigningKey as _;
                    let claims = json!({"iss": i.issuer, "sub": "sub-x", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                                        "nonce": s.nonce(), "email": "x@example.com", "email_verified": true});
                    let input =
                        format!("{}.{}", b64(br#"{"alg":"RS256","kid":"k1"}"#), b64(claims.to_string().as_bytes()));
                    let sig = other_key
                        .sign(&openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, input.as_bytes())
                        .unwrap();
                    answer(&format!("{input}.{}", b64(&sig)), "at")
                }
            }),
        ),
        ("no ID token", Box::new(|_, _| json!({"access_token": "at", "token_type": "Bearer"}))),
        (
            "e-mail not verified",
            Box::new(|i, s| {
                answer(
                    &i.id_token("sub-v", s.nonce(), json!({"email": "v@example.com", "email_verified": false})),
                    "at",
                )
            }),
        ),
        (
            "e-mail verification absent",
            Box::new(|i, s| answer(&i.id_token("sub-v", s.nonce(), json!({"email": "v@example.com"})), "at")),
        ),
        (
            "e-mail domain not allowed",
            Box::new(|i, s| answer(&i.id_token("sub-e", s.nonce(), good("eve@evil.example")), "at")),
        ),
        (
            "look-alike domain",
            Box::new(|i, s| answer(&i.id_token("sub-e", s.nonce(), good("eve@example.com.evil.example")), "at")),
        ),
        (
            "userinfo names another subject",
            Box::new(|i, s| {
                i.userinfo_for(
                    "at-other-sub",
                    json!({"sub": "sub-someone", "email": "u@example.com", "email_verified": true}),
                );
                answer(&i.id_token("sub-u", s.nonce(), json!({})), "at-other-sub")
            }),
        ),
    ];
    for (what, craft) in &crafted {
        let mut s = start(&app).await;
        let c = code();
        idp.grant(&c, s.challenge(), craft(&idp, &s));
        let r = s.finish(&app, &c).await;
        refused(&app, &s, &r, what, before).await;
    }

    // Flows broken on the way back.
    let mut s = start(&app).await;
    let c = code();
    idp.grant(&c, s.challenge(), answer(&idp.id_token("sub-alice", s.nonce(), good("alice@example.com")), "at"));
    let cases = [
        ("missing state", format!("code={c}")),
        ("unknown state", format!("code={c}&state=forged-state")),
        ("missing code", format!("state={}", s.state())),
        ("provider error", "error=access_denied&error_description=%3Cscript%3E".to_owned()),
    ];
    let exchanges = idp.token_calls();
    for (what, q) in cases {
        let r = s.callback(&app, &q).await;
        refused(&app, &s, &r, what, before).await;
        assert!(!r.text().contains("<script>"), "{what}: provider text reflected");
    }
    assert_eq!(idp.token_calls(), exchanges, "no code was exchanged for a broken callback");
    // The state taken by another browser (no binding cookie): refused, and spent.
    let mut thief = Started { browser: Browser::new(&app.url("")), q: s.q.clone() };
    let r = thief.finish(&app, &c).await;
    refused(&app, &thief, &r, "another browser", before).await;
    let r = s.finish(&app, &c).await;
    refused(&app, &s, &r, "state spent by another browser", before).await;
    // A code the provider already redeemed.
    let mut s = start(&app).await;
    let used = "code-1";
    let r = s.finish(&app, used).await;
    refused(&app, &s, &r, "replayed code", before).await;
    // A verifier that does not match the challenge the provider saw.
    let mut s = start(&app).await;
    let c = code();
    idp.grant(&c, "not-the-challenge", answer(&idp.id_token("sub-alice", s.nonce(), good("alice@example.com")), "at"));
    let r = s.finish(&app, &c).await;
    refused(&app, &s, &r, "PKCE mismatch", before).await;
    // The redirect path with something appended is no callback.
    let mut s = start(&app).await;
    let r = s.browser.get(&app.url(&format!("/dashboard/oidc/callback/x?code=c&state={}", s.state()))).await;
    assert!(r.status == 404 || r.status == 303, "{}", r.status);
    assert!(!s.browser.cookies.contains_key("sy_session"));

    // A disabled user's identity cannot sign in.
    app.control().await.disable_user("alice").await.unwrap();
    let mut s = start(&app).await;
    let c = code();
    idp.grant(&c, s.challenge(), answer(&idp.id_token("sub-alice", s.nonce(), good("alice@example.com")), "at"));
    let r = s.finish(&app, &c).await;
    refused(&app, &s, &r, "disabled user", before).await;

    // Starting logins is throttled per client address (each holds a pending entry for ten
    // minutes): 40 more at once cross 30 within one minute's window whatever its boundary.
    let mut b = Browser::new(&app.url(""));
    let mut refused_starts = 0;
    for _ in 0..40 {
        let r = b.get(&app.url("/dashboard/oidc/login")).await;
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
            assert!(r.header("content-type").unwrap().starts_with("text/html"));
            refused_starts += 1;
        } else {
            assert_eq!(r.status, 303);
        }
    }
    assert!(refused_starts > 0, "40 starts in a moment were all let through");

    app.stop().await;
    idp.stop().await;
}

#[actix_web::test]
async fn oidc_provisioning_admin_claim_linking_and_userinfo() {
    let idp = MockIdp::start();
    let app = app_with(&idp, |_| {}).await;
    let c = app.control().await;
    c.create_user("erin", switchyard::types::Role::User, None, None).await.unwrap();
    c.set_email("erin", Some("erin@example.com")).await.unwrap();
    let mut n = 0;
    let mut login = |sub: &'static str, access: &'static str, extra: Value| {
        n += 1;
        let code = format!("c{n}");
        let app = &app;
        let idp = &idp;
        async move {
            let mut s = start(app).await;
            idp.grant(&code, s.challenge(), answer(&idp.id_token(sub, s.nonce(), extra), access));
            let r = s.finish(app, &code).await;
            (r.status, s.browser)
        }
    };
    // The admin claim makes an admin; a string `email_verified` (some providers) counts.
    let (status, mut admin) = login(
        "sub-root",
        "at-root",
        json!({"email": "root@example.com", "email_verified": "true", "groups": ["staff", "gw-admins"]}),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(c.get_user("root").await.unwrap().role.as_str(), "admin");
    assert_eq!(admin.get(&app.url("/dashboard/users")).await.status, 200);
    // Losing the claim at the next login loses the role.
    let (status, _) = login(
        "sub-root",
        "at-root2",
        json!({"email": "root@example.com", "email_verified": true, "groups": ["staff"]}),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(c.get_user("root").await.unwrap().role.as_str(), "user");
    // A verified e-mail on record links the identity to that user (link_by_email).
    let (status, _) = login("sub-erin", "at-erin", good("erin@example.com")).await;
    assert_eq!(status, 303);
    let erin = c.get_user("erin").await.unwrap();
    assert_eq!(erin.oidc_subject.as_deref(), Some("sub-erin"));
    // Userinfo fills a missing e-mail, keyed by the whole access token: two tokens that share
    // a long prefix get their own answers.
    idp.userinfo_for(
        "at-shared-prefix-0000000-AAAA",
        json!({"sub": "sub-carol", "email": "carol@example.com", "email_verified": true}),
    );
    idp.userinfo_for(
        "at-shared-prefix-0000000-BBBB",
        json!({"sub": "sub-dave", "email": "dave@example.com", "email_verified": true}),
    );
    assert_eq!(login("sub-carol", "at-shared-prefix-0000000-AAAA", json!({})).await.0, 303);
    assert_eq!(login("sub-dave", "at-shared-prefix-0000000-BBBB", json!({})).await.0, 303);
    let carol = c.get_user("carol").await.unwrap();
    let dave = c.get_user("dave").await.unwrap();
    assert_eq!((carol.email.as_deref(), dave.email.as_deref()), (Some("carol@example.com"), Some("dave@example.com")));
    assert_ne!(carol.id, dave.id);
    // A name taken by someone else gets a suffix, never their account.
    let (status, _) = login("sub-other-alice", "at-x", good("erin@other.example.com")).await;
    assert_eq!(status, 403, "domain not allowed");
    let (status, _) = login(
        "sub-erin2",
        "at-e2",
        json!({"email": "Erin@Example.com", "email_verified": true, "preferred_username": "erin"}),
    )
    .await;
    assert_eq!(status, 403, "erin's e-mail is linked already: a second identity may not take it");
    app.stop().await;
    idp.stop().await;
}
