//! The dashboard on three nodes behind nginx: an OIDC login started on one node finishes on
//! another (its PKCE verifier, nonce and state live in Redis), the session works on every node,
//! a logout on one ends it on all, and failed password logins are counted cluster-wide (S11).

use std::collections::HashMap;

use super::{Cluster, Options, serial};
use crate::support::browser::{Browser, csrf_of, login};
use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, MockIdp};
use crate::support::services::free_port;
use crate::support::{fresh_database, service_url};

#[actix_web::test]
async fn oidc_login_and_sessions_across_three_nodes_behind_nginx() {
    let _serial = serial().await;
    let idp = MockIdp::start();
    let nginx_port = free_port();
    let public = format!("http://127.0.0.1:{nginx_port}");
    let extra = format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         allowed_domains = [\"example.com\"]\n[dashboard]\nlogin_failures_per_user = 5\n",
        idp.issuer
    );
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let mut opts = Options::new(db, extra);
    opts.nginx_port = Some(nginx_port);
    opts.env.push(("SWITCHYARD__SERVER__PUBLIC_URL".into(), public.clone()));
    let cluster = Cluster::start(opts).await;

    // Started on node 1: the provider is told to come back to nginx.
    let mut b = Browser::new(&public);
    let r = b.get(&cluster.nodes[0].url("/dashboard/oidc/login")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").unwrap().to_owned();
    let q: HashMap<String, String> = serde_urlencoded::from_str(location.split_once('?').unwrap().1).unwrap();
    assert_eq!(q["redirect_uri"], format!("{public}/dashboard/oidc/callback"));
    assert_eq!(q["code_challenge_method"], "S256");
    idp.grant(
        "c1",
        &q["code_challenge"],
        serde_json::json!({"access_token": "at", "token_type": "Bearer",
            "id_token": idp.id_token("sub-zoe", &q["nonce"], serde_json::json!({"email": "zoe@example.com", "email_verified": true}))}),
    );
    // Finished on node 2.
    let cb = serde_urlencoded::to_string([("code", "c1"), ("state", q["state"].as_str())]).unwrap();
    let r = b.get(&cluster.nodes[1].url(&format!("/dashboard/oidc/callback?{cb}"))).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/dashboard")), "{}", r.text());
    // The session opens pages on every node, and through nginx.
    for n in &cluster.nodes {
        let r = b.get(&n.url("/dashboard/tokens")).await;
        assert_eq!(r.status, 200, "{}", n.name);
        assert!(r.text().contains("zoe"));
    }
    for _ in 0..3 {
        assert_eq!(b.get(&cluster.url("/dashboard")).await.status, 200);
    }
    // A form through nginx (its Origin is the public URL) works; a logout on node 3 ends the
    // session on all of them.
    let csrf = csrf_of(&b.get(&cluster.url("/dashboard/tokens")).await.text());
    let r = b.post(&cluster.url("/dashboard/tokens"), &[("name", "from-nginx"), ("csrf", &csrf)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let kept = b.clone();
    let r = b.post(&cluster.nodes[2].url("/dashboard/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    for n in &cluster.nodes {
        let mut k = kept.clone();
        assert_eq!(k.get(&n.url("/dashboard")).await.status, 303, "{} kept a logged-out session", n.name);
    }

    // Failed password logins spread over the nodes count together: 5 for one name.
    let control = switchyard::control::Control::new(
        cluster.store().await,
        switchyard::shared::connect(None, "", 1).await.unwrap(),
    );
    control.create_user("yan", switchyard::types::Role::User, None, Some("yan-password-1")).await.unwrap();
    let mut failed = 0;
    for i in 0..5 {
        let base = cluster.nodes[i % 3].url("");
        let r = login(&mut Browser::new(&public), &base, "yan", "wrong").await;
        assert_eq!(r.status, 401);
        failed += 1;
    }
    let r = login(&mut Browser::new(&public), &cluster.nodes[2].url(""), "yan", "yan-password-1").await;
    assert_eq!(r.status, 429, "after {failed} failures over three nodes");
    idp.stop().await;
}
