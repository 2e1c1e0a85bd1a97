//! Autoselect: privacy classification, the privacy fence, capabilities, fallback; rules,
//! embedding and llm selection against mock embeddings and a mock selection model.

use serde_json::json;
use switchyard::config::{AutoselectCandidateConfig, AutoselectConfig, Settings};
use switchyard::types::Locality;

use crate::support::mock_upstream::{BadBody, MockUpstream, Plan};
use crate::support::{TestApp, chat, openai_provider, post_json, rotation};

pub(crate) fn candidate(route: &str, privacy: bool) -> AutoselectCandidateConfig {
    AutoselectCandidateConfig { route: route.into(), description: String::new(), privacy, examples: vec![] }
}

pub(crate) fn autoselect(
    name: &str,
    selection: &str,
    fallback: Option<&str>,
    candidates: Vec<AutoselectCandidateConfig>,
) -> AutoselectConfig {
    AutoselectConfig {
        name: name.into(),
        description: String::new(),
        selection: selection.into(),
        fallback: fallback.map(str::to_owned),
        classify_privacy: true,
        classify_semantic: false,
        selection_model: None,
        embedding_route: None,
        selection_timeout_ms: 3_000,
        min_similarity: None,
        capabilities: vec![],
        privacy_keywords: vec!["salary".into()],
        privacy_patterns: vec![],
        available_models: candidates,
        cache_ttl_secs: None,
        cache_scope: Default::default(),
    }
}

fn configure(s: &mut Settings, local: &MockUpstream, cloud: &MockUpstream) {
    let mut l = openai_provider("local", &local.base(), &["m"]);
    l.models[0].capabilities = vec!["tools".into()];
    s.providers.push(l);
    let mut c = openai_provider("cloud", &cloud.base(), &["m"]);
    c.locality = Locality::Cloud;
    s.providers.push(c);
    // Public work goes to the cloud; private work and tool calls to the local model.
    s.autoselects.push(autoselect(
        "eng",
        "rules",
        None,
        vec![candidate("provider/cloud/m", false), candidate("provider/local/m", true)],
    ));
    // Only a cloud candidate; the fallback rotation mixes both.
    s.rotations.push(rotation(
        "mixed",
        "priority",
        vec![
            switchyard::config::RotationEntryConfig {
                provider_id: "cloud".into(),
                model: "m".into(),
                weight: 1.0,
                error_cooldown: None,
            },
            switchyard::config::RotationEntryConfig {
                provider_id: "local".into(),
                model: "m".into(),
                weight: 1.0,
                error_cooldown: None,
            },
        ],
    ));
    s.autoselects.push(autoselect("fb", "rules", Some("rotation/mixed"), vec![candidate("provider/cloud/m", false)]));
    s.autoselects.push(autoselect("strict", "rules", None, vec![candidate("provider/cloud/m", false)]));
    let mut llm = autoselect("picky", "llm", None, vec![candidate("provider/cloud/m", false)]);
    llm.selection_model = Some("provider/local/m".into());
    s.autoselects.push(llm);
}

#[actix_web::test]
async fn rules_mode_respects_privacy_capabilities_and_fallback() {
    let (local, cloud) = (MockUpstream::start(1), MockUpstream::start(1));
    let app = TestApp::spawn(|s| configure(s, &local, &cloud)).await;
    let t = &app.admin_token;
    let url = app.url("/v1/chat/completions");

    let r = post_json(&url, t, &chat("autoselect/eng", "refactor this module")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-route"), Some("autoselect/eng"));
    assert_eq!(r.header("x-switchyard-provider"), Some("cloud"));
    assert_eq!(r.header("x-switchyard-reason"), Some("rules"));

    for prompt in ["my email is jane.doe@example.com", "what is my salary", "key sk-abcdefghijklmnopqrstuvwxyz0123"] {
        let r = post_json(&url, t, &chat("eng", prompt)).await;
        assert_eq!(r.header("x-switchyard-provider"), Some("local"), "{prompt}");
        assert_eq!(r.header("x-switchyard-reason"), Some("privacy"));
    }
    assert_eq!(cloud.calls(), 1, "a private request reached the cloud");

    // Tool calls need the `tools` capability, which only the local model declares.
    let body = json!({"model": "autoselect/eng", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]});
    let r = post_json(&url, t, &body).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    assert_eq!(r.header("x-switchyard-reason"), Some("capability"));

    // A private request falls back only to the fallback's local targets.
    let r = post_json(&url, t, &chat("autoselect/fb", "card 4111 1111 1111 1111")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    assert_eq!(r.header("x-switchyard-reason"), Some("fallback"));
    let r = post_json(&url, t, &chat("autoselect/fb", "hello")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("cloud"));
    assert_eq!(cloud.calls(), 2);

    // No private target at all: refused, never leaked.
    post_json(&url, t, &chat("autoselect/strict", "ssn 123-45-6789"))
        .await
        .assert_error(403, "privacy_route_unavailable");
    assert_eq!(cloud.calls(), 2);

    let r = post_json(&app.url("/api/autoselect/chat/completions"), t, &chat("eng", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = crate::support::get(&app.url("/v1/models"), t).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"autoselect/eng".to_owned()) && ids.contains(&"autoselect/picky".to_owned()), "{ids:?}");
    let _ = local;
    app.stop().await;
}

/// The privacy fence and the routing headers on the Messages and Responses routes, exactly as on
/// chat: a private prompt — in a system block, a later turn or a tool result — stays local; with
/// no private target it is refused in the route's dialect, and the cloud sees none of it.
#[actix_web::test]
async fn the_privacy_fence_holds_on_messages_and_responses() {
    let (local, cloud) = (MockUpstream::start(1), MockUpstream::start(1));
    let app = TestApp::spawn(|s| configure(s, &local, &cloud)).await;
    let t = &app.admin_token;
    let messages = app.url("/v1/messages");
    let public = json!({"model": "autoselect/eng", "max_tokens": 50, "messages": [{"role": "user", "content": "refactor this"}]});
    let r = post_json(&messages, t, &public).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.header("x-switchyard-route"), r.header("x-switchyard-provider")),
        (Some("autoselect/eng"), Some("cloud"))
    );
    assert_eq!(r.json()["type"], "message");
    let private = [
        json!({"model": "autoselect/eng", "max_tokens": 50, "system": [{"type": "text", "text": "the user's salary is 90k"}],
            "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "eng", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]}]}),
        json!({"model": "eng", "max_tokens": 50, "messages": [{"role": "user", "content": "look it up"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "db", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "jane.doe@example.com"}]}]}),
    ];
    for body in &private {
        let r = post_json(&messages, t, body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            (r.header("x-switchyard-provider"), r.header("x-switchyard-reason")),
            (Some("local"), Some("privacy")),
            "{body}"
        );
    }
    let r = post_json(&app.url("/v1/responses"), t, &json!({"model": "eng", "input": "what is my salary"})).await;
    assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-reason")), (Some("local"), Some("privacy")));
    assert_eq!(r.json()["object"], "response");
    assert_eq!(cloud.calls(), 1, "a private request reached the cloud");
    // No private target: refused in the route's dialect, never leaked.
    let strict = json!({"model": "autoselect/strict", "max_tokens": 50, "messages": [{"role": "user", "content": "ssn 123-45-6789"}]});
    let r = post_json(&messages, t, &strict).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "permission_error");
    post_json(&app.url("/v1/responses"), t, &json!({"model": "autoselect/strict", "input": "ssn 123-45-6789"}))
        .await
        .assert_error(403, "privacy_route_unavailable");
    assert_eq!(cloud.calls(), 1);
    let _ = local;
    app.stop().await;
}

fn described(route: &str, privacy: bool, description: &str, example: &str) -> AutoselectCandidateConfig {
    AutoselectCandidateConfig {
        route: route.into(),
        description: description.into(),
        privacy,
        examples: vec![example.into()],
    }
}

/// Creative writing goes to the cloud; engineering (and anything private) to the local model.
fn semantic_candidates() -> Vec<AutoselectCandidateConfig> {
    vec![
        described(
            "provider/cloud/m",
            false,
            "creative writing: poems, stories, song lyrics",
            "write a poem about the ocean",
        ),
        described(
            "provider/local/m",
            true,
            "software engineering: refactor code, write unit tests, debug functions",
            "refactor this rust function",
        ),
    ]
}

struct Semantic {
    local: MockUpstream,
    cloud: MockUpstream,
    /// Local: serves `embed` (embeddings) and `judge` (a local selection model).
    emb: MockUpstream,
    /// Cloud: serves `judge` (a cloud selection model).
    sel: MockUpstream,
}

fn configure_semantic(s: &mut Settings, m: &Semantic) {
    s.providers.push(openai_provider("local", &m.local.base(), &["m"]));
    s.providers.push(openai_provider("local2", &m.local.base(), &["m2"]));
    let mut c = openai_provider("cloud", &m.cloud.base(), &["m"]);
    c.locality = Locality::Cloud;
    s.providers.push(c);
    s.providers.push(openai_provider("emb", &m.emb.base(), &["embed", "judge"]));
    let mut sel = openai_provider("sel", &m.sel.base(), &["judge"]);
    sel.locality = Locality::Cloud;
    s.providers.push(sel);

    let mut sem = autoselect("sem", "embedding", Some("provider/local/m"), semantic_candidates());
    sem.embedding_route = Some("provider/emb/embed".into());
    sem.min_similarity = Some(0.2);
    s.autoselects.push(sem);

    let mut judge = autoselect("judge", "llm", Some("provider/local/m"), semantic_candidates());
    judge.selection_model = Some("provider/sel/judge".into());
    judge.selection_timeout_ms = 300;
    s.autoselects.push(judge);

    // Two private candidates: a private prompt still has a choice to make.
    let mut two_private = semantic_candidates();
    two_private.push(described("provider/local2/m2", true, "long documents and summaries", "summarise this report"));
    let mut cloud_judge = autoselect("cloud-judge", "llm", Some("provider/local/m"), two_private.clone());
    cloud_judge.selection_model = Some("provider/sel/judge".into());
    s.autoselects.push(cloud_judge);
    let mut local_judge = autoselect("local-judge", "llm", Some("provider/local/m"), two_private);
    local_judge.selection_model = Some("provider/emb/judge".into());
    s.autoselects.push(local_judge);
}

fn receipt_selection(rec: &switchyard::store::UsageRow) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(rec.routing.as_deref().expect("a routing receipt")).unwrap();
    v["selection"].clone()
}

#[actix_web::test]
async fn embedding_mode_picks_the_most_similar_candidate_and_caches_candidate_vectors() {
    let m = Semantic {
        local: MockUpstream::start(1),
        cloud: MockUpstream::start(1),
        emb: MockUpstream::start(1),
        sel: MockUpstream::start(1),
    };
    let app = TestApp::spawn(|s| configure_semantic(s, &m)).await;
    let (t, url) = (&app.admin_token, app.url("/v1/chat/completions"));

    let r = post_json(&url, t, &chat("autoselect/sem", "please write a poem about autumn")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-provider"), Some("cloud"));
    assert_eq!(r.header("x-switchyard-reason"), Some("semantic"));
    // One embeddings call: the prompt and the four candidate texts.
    let first = m.emb.received();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].json()["input"].as_array().unwrap().len(), 5);
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    let sel = receipt_selection(&rec);
    assert_eq!((sel["mode"].as_str(), sel["outcome"].as_str()), (Some("embedding"), Some("chosen")), "{sel}");
    assert_eq!(sel["chosen"], "provider/cloud/m");
    assert_eq!(sel["scores"].as_array().unwrap().len(), 2);
    // The embeddings call is billed to the caller under its own request id.
    let emb_id = first[0].header("x-request-id").unwrap().to_owned();
    let emb_rec = app.usage(&emb_id).await;
    assert_eq!((emb_rec.route.as_str(), emb_rec.status), ("provider/emb/embed", 200));
    assert_eq!(emb_rec.user_id, rec.user_id);

    // Candidate vectors come from the cache: only the prompt is embedded now.
    let r = post_json(&url, t, &chat("autoselect/sem", "refactor this function and debug it")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    assert_eq!(r.header("x-switchyard-reason"), Some("semantic"));
    let calls = m.emb.received();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].json()["input"].as_array().unwrap().len(), 1);

    // Nothing similar enough: the fallback.
    let r = post_json(&url, t, &chat("autoselect/sem", "zzzz qqqq xxxx")).await;
    assert_eq!(r.header("x-switchyard-reason"), Some("fallback"));
    let sel = receipt_selection(&app.usage(r.header("x-request-id").unwrap()).await);
    assert_eq!(sel["outcome"], "below_min_similarity", "{sel}");

    // The embeddings route fails: the fallback, never an error for the client.
    m.emb.plan(Plan { status: 500, ..Plan::default() });
    let r = post_json(&url, t, &chat("autoselect/sem", "write a poem about the moon")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-reason"), Some("fallback"));
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    let sel = receipt_selection(&app.usage(r.header("x-request-id").unwrap()).await);
    assert_eq!(sel["outcome"], "error", "{sel}");

    // A private prompt has one eligible candidate: no embeddings call, never the cloud.
    let before = (m.emb.calls(), m.cloud.calls());
    let r = post_json(&url, t, &chat("autoselect/sem", "write a poem about my salary of 9000")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    assert_eq!(r.header("x-switchyard-reason"), Some("privacy"));
    assert_eq!((m.emb.calls(), m.cloud.calls()), before);
    app.stop().await;
}

#[actix_web::test]
async fn llm_mode_parses_the_choice_and_falls_back_on_garbage_unknown_ids_errors_and_timeouts() {
    let m = Semantic {
        local: MockUpstream::start(1),
        cloud: MockUpstream::start(1),
        emb: MockUpstream::start(1),
        sel: MockUpstream::start(2),
    };
    let app = TestApp::spawn(|s| configure_semantic(s, &m)).await;
    let (t, url) = (&app.admin_token, app.url("/v1/chat/completions"));
    let answer = |content: &str| Plan { content: Some(content.into()), ..Plan::default() };

    m.sel.plan(answer("provider/cloud/m"));
    let r = post_json(&url, t, &chat("autoselect/judge", "write a limerick")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-provider"), Some("cloud"));
    // SPEC §3: the llm mode's reason is `llm` (`semantic` is the embedding mode's).
    assert_eq!(r.header("x-switchyard-reason"), Some("llm"));
    // The selection call's record names the request it served; the receipt shows the call's
    // request id, latency and cost, and the answer.
    let id = r.header("x-request-id").unwrap().to_owned();
    let sel = receipt_selection(&app.usage(&id).await);
    let call_id = sel["call"]["request_id"].as_str().expect("the selection call in the receipt").to_owned();
    assert!(sel["call"]["latency_ms"].is_i64() && sel["call"]["cost_usd"].is_f64(), "{sel}");
    assert_eq!(sel["answer"], "provider/cloud/m", "{sel}");
    let call = app.usage(&call_id).await;
    assert_eq!(call.parent_request_id.as_deref(), Some(id.as_str()));
    assert_eq!((call.route.as_str(), call.outcome.as_str()), ("provider/sel/judge", "ok"));
    // The selection model saw every candidate's id and description, and the prompt.
    let asked = m.sel.received()[0].json();
    let system = asked["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("provider/cloud/m") && system.contains("song lyrics"), "{system}");
    assert_eq!(asked["messages"][1]["content"], "write a limerick");
    assert_eq!(asked["model"], "judge");

    m.sel.plan(answer("<think>poetry? no, code</think>\nI choose `provider/local/m`."));
    let r = post_json(&url, t, &chat("autoselect/judge", "fix the bug")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    assert_eq!(r.header("x-switchyard-reason"), Some("llm"));

    for (plan, outcome) in [
        (answer("I cannot decide."), "unknown_id"),
        (answer("provider/cloud/gpt-5"), "unknown_id"),
        (answer("provider/cloud/m or provider/local/m"), "ambiguous"),
        (Plan { status: 503, ..Plan::default() }, "error"),
        (Plan { bad_body: Some(BadBody::Truncated), ..Plan::default() }, "error"),
        (Plan { delay_headers_ms: 2_000, ..Plan::default() }, "timeout"),
    ] {
        m.sel.plan(plan);
        let r = post_json(&url, t, &chat("autoselect/judge", "write a poem")).await;
        assert_eq!(r.status, 200, "{outcome}: {}", r.text());
        assert_eq!(r.header("x-switchyard-reason"), Some("fallback"), "{outcome}");
        assert_eq!(r.header("x-switchyard-provider"), Some("local"), "{outcome}");
        let sel = receipt_selection(&app.usage(r.header("x-request-id").unwrap()).await);
        assert_eq!(sel["outcome"], outcome, "{sel}");
    }

    // Private prompt, cloud selection model: the prompt never reaches it; the fallback (local) serves.
    let before = (m.sel.calls(), m.cloud.calls());
    let r = post_json(&url, t, &chat("autoselect/cloud-judge", "summarise: jane.doe@example.com wrote")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local"));
    assert_eq!(r.header("x-switchyard-reason"), Some("fallback"));
    assert_eq!((m.sel.calls(), m.cloud.calls()), before, "a private prompt reached a cloud target");
    let sel = receipt_selection(&app.usage(r.header("x-request-id").unwrap()).await);
    assert_eq!(sel["outcome"], "no_private_selection_route", "{sel}");
    assert_eq!(sel["privacy_kinds"], json!(["email"]), "{sel}");

    // Private prompt, local selection model: it chooses among the private candidates only.
    m.emb.plan(answer("provider/local2/m2"));
    let r = post_json(&url, t, &chat("autoselect/local-judge", "summarise: jane.doe@example.com wrote")).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("local2"));
    assert_eq!(r.header("x-switchyard-reason"), Some("privacy"));
    let system = m.emb.received().last().unwrap().json()["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(!system.contains("provider/cloud/m"), "a cloud candidate was offered for a private prompt: {system}");
    assert_eq!((m.sel.calls(), m.cloud.calls()), before);
    app.stop().await;
}
