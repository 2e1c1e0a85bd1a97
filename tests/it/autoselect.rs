//! Autoselect, rules mode: privacy classification, the privacy fence, capabilities, fallback.

use serde_json::json;
use switchyard::config::{AutoselectCandidateConfig, AutoselectConfig, Settings};
use switchyard::types::Locality;

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, openai_provider, post_json, rotation};

fn candidate(route: &str, privacy: bool) -> AutoselectCandidateConfig {
    AutoselectCandidateConfig { route: route.into(), description: String::new(), privacy, examples: vec![] }
}

fn autoselect(
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
        capabilities: vec![],
        privacy_keywords: vec!["salary".into()],
        privacy_patterns: vec![],
        available_models: candidates,
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
    let v = post_json(&url, t, &chat("autoselect/picky", "hi")).await.assert_error(404, "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("not available"), "{v}");
    let ids: Vec<String> = crate::support::get(&app.url("/v1/models"), t).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"autoselect/eng".to_owned()) && !ids.contains(&"autoselect/picky".to_owned()), "{ids:?}");
    let _ = local;
    app.stop().await;
}
