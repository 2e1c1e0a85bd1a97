//! A scriptable OpenID provider on loopback, for the crafted flows of TESTPLAN S6: discovery,
//! keys (RSA, `kid` "k1"), an authorize endpoint that answers nothing (the test plays the user
//! and reads what the gateway asked for from its redirect), a token endpoint that checks the client's credentials,
//! the code, its single use and its PKCE S256 verifier before it hands out the answer the test
//! prepared, and a userinfo endpoint keyed by the whole access token.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use openidconnect::{JsonWebKeyId, PrivateSigningKey as _};
use serde_json::{Value, json};
use sha2::Digest as _;

pub const CLIENT_ID: &str = "gw-dashboard";
pub const CLIENT_SECRET: &str = "gw-dashboard-secret";

/// A PKCS#1 RSA key, made once per test process.
pub fn rsa_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let out = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "2048"])
            .output()
            .expect("openssl (tests/run.sh installs it)");
        assert!(out.status.success(), "openssl genrsa failed");
        String::from_utf8(out.stdout).expect("pem")
    })
}

/// What a code is worth at the token endpoint.
struct Grant {
    challenge: String,
    answer: Value,
    used: bool,
}

#[derive(Default)]
struct State {
    issuer: String,
    secret: String,
    grants: HashMap<String, Grant>,
    userinfo: HashMap<String, Value>,
    token_calls: usize,
}

/// A running provider.
pub struct MockIdp {
    pub issuer: String,
    state: Arc<Mutex<State>>,
    key: CoreRsaPrivateSigningKey,
    handle: ServerHandle,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl MockIdp {
    pub fn start() -> Self {
        Self::start_with(CLIENT_SECRET)
    }

    /// A provider that takes `secret` as the client's secret.
    pub fn start_with(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind idp");
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state =
            Arc::new(Mutex::new(State { issuer: issuer.clone(), secret: secret.to_owned(), ..State::default() }));
        let key = CoreRsaPrivateSigningKey::from_pem(rsa_pem(), Some(JsonWebKeyId::new("k1".into()))).unwrap();
        let jwks = json!({"keys": [serde_json::to_value(key.as_verification_key()).unwrap()]});
        let data = web::Data::from(Arc::clone(&state));
        let jwks = web::Data::new(jwks);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(jwks.clone())
                .route("/.well-known/openid-configuration", web::get().to(discovery))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
                .route(
                    "/jwks",
                    web::get().to(|k: web::Data<Value>| async move { HttpResponse::Ok().json(k.get_ref()) }),
                )
                .route("/userinfo", web::get().to(userinfo))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen idp")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { issuer, state, key, handle }
    }

    /// A JWT of `claims` with `header`, signed with the provider's key (RS256).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.key.sign(&CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&sig))
    }

    /// An ID token as a good provider would issue it for `sub`, with `extra` claims merged in.
    pub fn id_token(&self, sub: &str, nonce: &str, extra: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut c =
            json!({"iss": self.issuer, "sub": sub, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": nonce});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        self.sign(&json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}), &c)
    }

    /// Makes `code` worth `answer` (a token response) for a verifier matching `challenge`.
    pub fn grant(&self, code: &str, challenge: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .grants
            .insert(code.into(), Grant { challenge: challenge.into(), answer, used: false });
    }

    /// The answer of the userinfo endpoint for `access_token`.
    pub fn userinfo_for(&self, access_token: &str, claims: Value) {
        self.state.lock().unwrap().userinfo.insert(access_token.into(), claims);
    }

    /// How often the token endpoint was called.
    pub fn token_calls(&self) -> usize {
        self.state.lock().unwrap().token_calls
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn discovery(s: web::Data<Mutex<State>>) -> HttpResponse {
    let issuer = s.lock().unwrap().issuer.clone();
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}

async fn authorize() -> HttpResponse {
    HttpResponse::Ok().body("the test plays the user")
}

fn invalid_grant(why: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": "invalid_grant", "error_description": why}))
}

async fn token(s: web::Data<Mutex<State>>, req: HttpRequest, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let mut st = s.lock().unwrap();
    st.token_calls += 1;
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{}", st.secret)));
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_client"}));
    }
    let f = form.into_inner();
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return invalid_grant("grant_type");
    }
    let Some(g) = f.get("code").and_then(|c| st.grants.get_mut(c)) else { return invalid_grant("unknown code") };
    if g.used {
        return invalid_grant("code used already");
    }
    g.used = true;
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if b64(&sha2::Sha256::digest(verifier.as_bytes())) != g.challenge {
        return invalid_grant("PKCE verifier does not match");
    }
    HttpResponse::Ok().json(g.answer.clone())
}

async fn userinfo(s: web::Data<Mutex<State>>, req: HttpRequest) -> HttpResponse {
    let token =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| s.lock().unwrap().userinfo.get(t).cloned()) {
        Some(v) => HttpResponse::Ok().json(v),
        None => HttpResponse::Unauthorized().finish(),
    }
}
