//! The dashboard without a browser: password login and its throttle (S11), sessions, every page
//! for admins and users, the admin pages refused to users (S4), CSRF on every form (S5), one
//! user's objects invisible to another (S1 for the dashboard), escaping (S15), the error net.

use std::time::Duration;

use serde_json::json;
use switchyard::control::{Control, NewTokenRequest};
use switchyard::types::Role;

use crate::support::browser::{Browser, csrf_of, login};
use crate::support::{TestApp, chat, post_json};

/// A form's fields.
type Fields = Vec<(String, String)>;

const ADMIN_PW: &str = "admin-password-1";
const USER_PW: &str = "user-password-1";

async fn app() -> TestApp {
    TestApp::spawn(|s| {
        s.providers.push(switchyard::config::ProviderConfig {
            kind: switchyard::types::ProviderKind::Mock,
            endpoint: None,
            ..crate::support::openai_provider("mock", "", &["m"])
        });
        s.dashboard.login_failures_per_user = 5;
        s.dashboard.login_failures_per_address = 12;
    })
    .await
}

/// Sets the admin's password and creates `alice` and `bob` with passwords and tokens.
async fn people(app: &TestApp) -> (Control, String, String) {
    let c = app.control().await;
    let admin = c.get_user("admin").await.unwrap();
    c.set_password(admin.id, ADMIN_PW).await.unwrap();
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        c.create_user(name, Role::User, None, Some(USER_PW)).await.unwrap();
        tokens.push(c.create_token(NewTokenRequest::for_user(name)).await.unwrap().0);
    }
    (c, tokens.remove(0), tokens.remove(0))
}

async fn signed_in(app: &TestApp, user: &str, pw: &str) -> Browser {
    let mut b = Browser::new(&app.url(""));
    let r = login(&mut b, &app.url(""), user, pw).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/dashboard"));
    b
}

/// A request id of a proxied chat of `token`, once its record is stored.
async fn proxied(app: &TestApp, token: &str) -> String {
    let r = post_json(&app.url("/v1/chat/completions"), token, &chat("m", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-request-id").unwrap().to_owned();
    app.usage(&id).await;
    id
}

const ADMIN_PAGES: [&str; 7] = [
    "/dashboard/users",
    "/dashboard/users/alice",
    "/dashboard/tiers",
    "/dashboard/prices",
    "/dashboard/catalog",
    "/dashboard/cluster",
    "/dashboard?group=user",
];

const USER_PAGES: [&str; 9] = [
    "/dashboard",
    "/dashboard?period=7d&group=model",
    "/dashboard/usage",
    "/dashboard/usage?period=30d&errors=1",
    "/dashboard/requests",
    "/dashboard/tokens",
    "/dashboard/routes",
    "/dashboard/account",
    "/dashboard/usage.csv",
];

#[actix_web::test]
async fn password_login_pages_sessions_and_logout() {
    let app = app().await;
    let (_c, alice_token, _) = people(&app).await;
    let base = app.url("");

    // Without a session every page sends the browser to the login page.
    let mut anon = Browser::new(&base);
    for p in USER_PAGES.iter().chain(ADMIN_PAGES.iter()) {
        let r = anon.get(&app.url(p)).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/dashboard/login")), "{p}");
    }
    let page = anon.get(&app.url("/dashboard/login")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    for field in [r#"name="username""#, r#"name="password""#, r#"name="csrf""#] {
        assert!(html.contains(field), "{field}");
    }
    assert!(!html.contains("Sign in with SSO"), "no [oidc], no SSO link");

    // A wrong password: 401, the same words whether or not the user exists.
    let wrong = login(&mut anon, &base, "alice", "nope-nope").await;
    let ghost = login(&mut anon, &base, "ghost", "nope-nope").await;
    assert_eq!((wrong.status, ghost.status), (401, 401));
    assert!(wrong.text().contains("Wrong username or password."));
    assert!(ghost.text().contains("Wrong username or password."));
    assert!(!anon.cookies.contains_key("sy_session"));

    // A login form without its cookie's token is refused.
    let mut other = Browser::new(&base);
    let r = other
        .post(&app.url("/dashboard/login"), &[("username", "admin"), ("password", ADMIN_PW), ("csrf", "forged")])
        .await;
    assert_eq!(r.status, 403);

    // The session cookie's flags.
    let mut admin = Browser::new(&base);
    let r = login(&mut admin, &base, "admin", ADMIN_PW).await;
    assert_eq!(r.status, 303);
    let set = r.headers.iter().find(|(k, v)| k == "set-cookie" && v.starts_with("sy_session=")).unwrap().1.clone();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/dashboard"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "served over http without an https public_url");

    // Proxied requests show on the overview with their figures.
    for _ in 0..3 {
        proxied(&app, &alice_token).await;
    }
    let overview = admin.get(&app.url("/dashboard")).await;
    assert_eq!(overview.status, 200);
    assert!(overview.text().contains("<span>Requests</span><strong>3</strong>"), "{}", overview.text());
    assert!(overview.text().contains("<svg class=\"plot\""));
    let by_user = admin.get(&app.url("/dashboard?group=user")).await.text();
    assert!(by_user.contains("<td>alice</td>"), "{by_user}");

    // Every page answers an admin with a page, with the security headers.
    for p in USER_PAGES.iter().chain(ADMIN_PAGES.iter()) {
        let r = admin.get(&app.url(p)).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{p}");
        assert!(r.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
        assert_eq!(r.header("cache-control"), Some("no-store"), "{p}");
        if !p.ends_with(".csv") {
            assert!(r.header("content-type").unwrap().starts_with("text/html"), "{p}");
        }
    }
    let csv = admin.get(&app.url("/dashboard/usage.csv")).await.text();
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // Logout ends the session: the old cookie no longer opens anything.
    let kept = admin.clone();
    let csrf = csrf_of(&admin.get(&app.url("/dashboard")).await.text());
    let r = admin.post(&app.url("/dashboard/logout"), &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/dashboard/login")));
    let mut replay = kept;
    assert_eq!(replay.get(&app.url("/dashboard")).await.status, 303);
    app.stop().await;
}

#[actix_web::test]
async fn s11_failed_logins_are_throttled_per_username_and_per_address() {
    let app = app().await;
    people(&app).await;
    let base = app.url("");
    let mut b = Browser::new(&base);
    for _ in 0..5 {
        assert_eq!(login(&mut b, &base, "alice", "wrong-guess").await.status, 401);
    }
    // Locked: even the right password waits, and says for how long.
    let r = login(&mut b, &base, "alice", USER_PW).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    // The same for a name that does not exist: the lock tells nothing about the account.
    for _ in 0..5 {
        assert_eq!(login(&mut b, &base, "ghost", "wrong-guess").await.status, 401);
    }
    assert_eq!(login(&mut b, &base, "ghost", "wrong-guess").await.status, 429);
    // Bob is not locked by alice's failures…
    let r = login(&mut b, &base, "bob", USER_PW).await;
    assert_eq!(r.status, 303, "{}", r.text());
    // …until this address has failed too often (12 here), whatever the names.
    let mut c = Browser::new(&base);
    for i in 0..2 {
        assert_eq!(login(&mut c, &base, &format!("n{i}"), "x").await.status, 401);
    }
    assert_eq!(login(&mut c, &base, "admin", ADMIN_PW).await.status, 429);
    app.stop().await;
}

/// Every state-changing form of the dashboard: path and fields (without the token).
fn forms(alice_token_id: i64) -> Vec<(String, Vec<(&'static str, String)>)> {
    let s = |v: &str| v.to_owned();
    vec![
        (s("/dashboard/logout"), vec![]),
        (s("/dashboard/tokens"), vec![("name", s("ci"))]),
        (format!("/dashboard/tokens/{alice_token_id}/revoke"), vec![]),
        (format!("/dashboard/tokens/{alice_token_id}"), vec![("rpm", s("7"))]),
        (
            s("/dashboard/routes"),
            vec![
                ("kind", s("autoselect")),
                ("name", s("a1")),
                ("spec", s(r#"{"available_models": [{"route": "provider/mock/m"}]}"#)),
            ],
        ),
        (s("/dashboard/routes/delete"), vec![("kind", s("autoselect")), ("name", s("a1"))]),
        (s("/dashboard/users"), vec![("username", s("carol"))]),
        (s("/dashboard/users/bob"), vec![("action", s("disable"))]),
        (s("/dashboard/tiers"), vec![("name", s("gold")), ("rpm", s("5"))]),
        (s("/dashboard/tiers/delete"), vec![("name", s("gold"))]),
        (s("/dashboard/prices"), vec![("model", s("m")), ("input", s("1")), ("output", s("2"))]),
        (s("/dashboard/prices/delete"), vec![("model", s("m"))]),
        (
            s("/dashboard/account/password"),
            vec![("current", s(ADMIN_PW)), ("new", s("x-new-pass-1")), ("confirm", s("x-new-pass-1"))],
        ),
    ]
}

/// Everything the forms could change, as one value.
async fn state_of(c: &Control) -> serde_json::Value {
    let mut users = Vec::new();
    for u in c.list_users().await.unwrap() {
        let tokens: Vec<_> =
            c.list_tokens(&u.username).await.unwrap().iter().map(|t| (t.id, t.revoked, t.rpm)).collect();
        let objects = c.list_user_objects(&u.username).await.unwrap();
        users.push(json!([u.username, u.status, u.tier, u.password_hash, tokens, objects]));
    }
    json!({
        "users": users,
        "tiers": c.list_tiers().await.unwrap().iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "prices": c.list_prices().await.unwrap().iter().map(|p| p.model.clone()).collect::<Vec<_>>(),
    })
}

#[actix_web::test]
async fn s4_s5_admin_pages_refuse_users_and_every_form_needs_its_token_and_origin() {
    let app = app().await;
    let (c, _, _) = people(&app).await;
    let base = app.url("");
    let alice_token = c.list_tokens("alice").await.unwrap()[0].id;
    let mut admin = signed_in(&app, "admin", ADMIN_PW).await;
    let mut alice = signed_in(&app, "alice", USER_PW).await;
    let alice_csrf = csrf_of(&alice.get(&app.url("/dashboard")).await.text());
    let admin_csrf = csrf_of(&admin.get(&app.url("/dashboard")).await.text());
    assert_ne!(alice_csrf, admin_csrf);

    // S4: the admin pages and forms refuse a user's session.
    for p in ADMIN_PAGES {
        assert_eq!(alice.get(&app.url(p)).await.status, if p.contains("group=user") { 400 } else { 403 }, "{p}");
    }
    let before = state_of(&c).await;
    let own_token = format!("/dashboard/tokens/{alice_token}");
    for path in [
        "/dashboard/users",
        "/dashboard/users/bob",
        "/dashboard/tiers",
        "/dashboard/tiers/delete",
        "/dashboard/prices",
        "/dashboard/prices/delete",
        own_token.as_str(),
    ] {
        let form = forms(alice_token).into_iter().find(|(p, _)| p == path).unwrap().1;
        let mut fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fields.push(("csrf", &alice_csrf));
        assert_eq!(alice.post(&app.url(path), &fields).await.status, 403, "{path}");
    }
    assert_eq!(state_of(&c).await, before, "a user changed an admin's object");

    // S5: every form, without its token, with another session's, from another origin, with
    // no session, and as a GET: 403 (or no such page) and nothing changes.
    for (path, form) in forms(alice_token) {
        let url = app.url(&path);
        let with = |extra: Option<(&str, &str)>| {
            let mut f: Vec<(String, String)> = form.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            if let Some((k, v)) = extra {
                f.push((k.to_owned(), v.to_owned()));
            }
            f
        };
        let cases: Vec<(&str, Browser, Fields)> = vec![
            ("no token", admin.clone(), with(None)),
            ("an empty token", admin.clone(), with(Some(("csrf", "")))),
            ("another session's token", admin.clone(), with(Some(("csrf", &alice_csrf)))),
            (
                "a cross-site origin",
                Browser { origin: Some("http://evil.example".into()), ..admin.clone() },
                with(Some(("csrf", &admin_csrf))),
            ),
            (
                "a null origin",
                Browser { origin: Some("null".into()), ..admin.clone() },
                with(Some(("csrf", &admin_csrf))),
            ),
            ("no session", Browser::new(&base), with(Some(("csrf", &admin_csrf)))),
        ];
        for (what, mut b, fields) in cases {
            let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(b.post(&url, &refs).await.status, 403, "{path}: {what}");
        }
        // A cross-site Referer without an Origin is refused too.
        let c2 = admin.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut f = with(Some(("csrf", &admin_csrf)));
        f.retain(|(k, _)| k != "current");
        let body = serde_urlencoded::to_string(&f).unwrap();
        let r = crate::support::browser::send(
            "POST",
            &url,
            &[
                ("cookie", &c2),
                ("content-type", "application/x-www-form-urlencoded"),
                ("referer", "http://evil.example/x"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 403, "{path}: cross-site referer");
        // No GET changes state: the form's path as a GET is a page or nothing.
        let got = admin.get(&url).await.status;
        assert!(got == 404 || got == 200, "{path}: GET answered {got}");
        assert_eq!(state_of(&c).await, before, "{path} changed state without a valid token");
    }
    // The admin still has a session after all that (logout was refused each time).
    assert_eq!(admin.get(&app.url("/dashboard")).await.status, 200);

    // Positive control: the same forms with the token do change things.
    let r = admin.post(&app.url(&own_token), &[("rpm", "7"), ("routes", "provider/*"), ("csrf", &admin_csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let t = c.get_token(alice_token).await.unwrap();
    assert_eq!((t.rpm, t.routes.clone()), (Some(7), Some(vec!["provider/*".to_owned()])));
    assert_eq!(alice.get(&app.url(&own_token)).await.status, 200, "her own token's page");
    let r = admin.post(&app.url("/dashboard/tiers"), &[("name", "gold"), ("rpm", "5"), ("csrf", &admin_csrf)]).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/dashboard/tiers")));
    assert_eq!(c.get_tier("gold").await.unwrap().rpm, Some(5));
    let r = admin
        .post(&app.url("/dashboard/users/bob"), &[("action", "tier"), ("value", "gold"), ("csrf", &admin_csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(c.get_user("bob").await.unwrap().tier.as_deref(), Some("gold"));
    let r = admin
        .post(&app.url("/dashboard/prices"), &[("model", "m"), ("input", "1"), ("output", "2"), ("csrf", &admin_csrf)])
        .await;
    assert_eq!(r.status, 303);
    let r = admin
        .post(&app.url("/dashboard/prices"), &[("model", "m"), ("input", "-1"), ("output", "2"), ("csrf", &admin_csrf)])
        .await;
    assert_eq!(r.status, 400, "a bad price is a page saying why");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = admin
        .post(
            &app.url("/dashboard/users"),
            &[
                ("username", "carol"),
                ("role", "user"),
                ("password", "carol-pass-1"),
                ("email", "carol@example.com"),
                ("csrf", &admin_csrf),
            ],
        )
        .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/dashboard/users/carol")));
    signed_in(&app, "carol", "carol-pass-1").await;
    app.stop().await;
}

#[actix_web::test]
async fn s1_a_user_sees_and_changes_only_their_own() {
    let app = app().await;
    let (c, alice_token, bob_token) = people(&app).await;
    let bob_request = proxied(&app, &bob_token).await;
    let alice_request = proxied(&app, &alice_token).await;
    c.put_user_object(
        "bob",
        switchyard::control::ObjectKind::Autoselect,
        "bobs",
        json!({"available_models": [{"route": "provider/mock/m"}]}),
    )
    .await
    .unwrap();
    let bob_token_id = c.list_tokens("bob").await.unwrap()[0].id;
    let mut alice = signed_in(&app, "alice", USER_PW).await;
    let csrf = csrf_of(&alice.get(&app.url("/dashboard")).await.text());

    // Another user's request answers exactly like one that does not exist.
    let theirs = alice.get(&app.url(&format!("/dashboard/requests/{bob_request}"))).await;
    let none = alice.get(&app.url("/dashboard/requests/01900000-0000-7000-8000-000000000000")).await;
    assert_eq!((theirs.status, none.status), (404, 404));
    assert_eq!(theirs.body, none.body);
    assert_eq!(alice.get(&app.url(&format!("/dashboard/requests/{alice_request}"))).await.status, 200);

    // Usage, CSV and overview: only her records, whatever the query names.
    for p in ["/dashboard/usage", "/dashboard/usage?user=bob", "/dashboard/usage.csv", "/dashboard/usage.csv?user=bob"]
    {
        let t = alice.get(&app.url(p)).await.text();
        assert!(t.contains(&alice_request), "{p}");
        assert!(!t.contains(&bob_request), "{p} shows bob's request");
    }
    assert!(
        alice.get(&app.url("/dashboard?user=bob")).await.text().contains("<span>Requests</span><strong>1</strong>")
    );

    // Tokens and routes of another user: not found, and untouched.
    let bobs_page = format!("/dashboard/tokens/{bob_token_id}");
    for p in [
        "/dashboard/tokens?user=bob",
        "/dashboard/routes?user=bob",
        "/dashboard/tokens?user=nobody",
        bobs_page.as_str(),
    ] {
        assert_eq!(alice.get(&app.url(p)).await.status, 404, "{p}");
    }
    let r = alice.post(&app.url(&format!("/dashboard/tokens/{bob_token_id}/revoke")), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 404);
    assert!(!c.get_token(bob_token_id).await.unwrap().revoked);
    let r = alice.post(&app.url("/dashboard/tokens?user=bob"), &[("name", "x"), ("csrf", &csrf)]).await;
    assert_eq!(r.status, 404);
    let r = alice
        .post(
            &app.url("/dashboard/routes/delete?user=bob"),
            &[("kind", "autoselect"), ("name", "bobs"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = alice
        .post(&app.url("/dashboard/routes/delete"), &[("kind", "autoselect"), ("name", "bobs"), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 404, "her own namespace has no `bobs`");
    assert_eq!(c.list_user_objects("bob").await.unwrap().len(), 1);
    assert_eq!(c.list_tokens("bob").await.unwrap().len(), 1);

    // Her own: a token, shown once, and an autoselect; both work.
    let r = alice.post(&app.url("/dashboard/tokens"), &[("name", "laptop"), ("rpm", "30"), ("csrf", &csrf)]).await;
    assert_eq!(r.status, 200);
    let raw = regex::Regex::new(r"sy-[0-9a-f]{64}").unwrap().find(&r.text()).unwrap().as_str().to_owned();
    assert_eq!(alice.get(&app.url("/dashboard/tokens")).await.text().matches(&raw).count(), 0, "shown once");
    let spec = r#"{"available_models": [{"route": "provider/mock/m"}]}"#;
    let r = alice
        .post(
            &app.url("/dashboard/routes"),
            &[("kind", "autoselect"), ("name", "mine"), ("spec", spec), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = post_json(&app.url("/v1/chat/completions"), &raw, &chat("user-autoselect/mine", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = alice
        .post(
            &app.url("/dashboard/routes"),
            &[("kind", "autoselect"), ("name", "bad"), ("spec", "{not json"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 400);
    app.stop().await;
}

#[actix_web::test]
async fn s15_names_are_escaped_and_disabling_ends_sessions() {
    let app = app().await;
    let (c, _, _) = people(&app).await;
    let evil = "<script>alert(1)</script>{{ 7*7 }}";
    c.create_token(NewTokenRequest { name: evil.into(), ..NewTokenRequest::for_user("alice") }).await.unwrap();
    c.put_user_object(
        "alice",
        switchyard::control::ObjectKind::Autoselect,
        "a1",
        json!({"description": "</script><img src=x onerror=alert(1)>", "selection": "rules", "fallback": "provider/mock/m",
               "available_models": [{"route": "provider/mock/m", "description": "<b>bold</b>"}]}),
    )
    .await
    .unwrap();
    let mut alice = signed_in(&app, "alice", USER_PW).await;
    for p in ["/dashboard/tokens", "/dashboard/routes"] {
        let html = alice.get(&app.url(p)).await.text();
        assert!(!html.contains("<script>") && !html.contains("<img") && !html.contains("<b>"), "{p}: {html}");
        assert!(html.contains("&lt;") || html.contains("&#60;") || html.contains("\\u003c"), "{p}");
    }

    // Disabling a user ends their sessions at once; enabling does not bring them back.
    let mut admin = signed_in(&app, "admin", ADMIN_PW).await;
    let csrf = csrf_of(&admin.get(&app.url("/dashboard/users/alice")).await.text());
    let r = admin.post(&app.url("/dashboard/users/alice"), &[("action", "disable"), ("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alice.get(&app.url("/dashboard")).await.status, 303);
    c.enable_user("alice").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alice.get(&app.url("/dashboard")).await.status, 303);
    let r = login(&mut Browser::new(&app.url("")), &app.url(""), "alice", USER_PW).await;
    assert_eq!(r.status, 303);
    // An admin cannot disable themselves.
    let r = admin.post(&app.url("/dashboard/users/admin"), &[("action", "disable"), ("csrf", &csrf)]).await;
    assert_eq!(r.status, 400);

    // The API's JSON error net leaves the dashboard's pages alone.
    let r = admin.get(&app.url("/dashboard/nope")).await;
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r =
        crate::support::send("POST", &app.url("/dashboard/login"), &[("content-type", "application/json")], "{}").await;
    assert!(r.header("content-type").unwrap().starts_with("text/html"), "{}", r.text());
    app.stop().await;
}
