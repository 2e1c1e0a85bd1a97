//! `Settings` validation: every problem with its path.

use switchyard::config::{RotationEntryConfig, Settings, check};

use crate::support::openai_provider;

#[test]
fn default_settings_are_valid() {
    assert!(check(&Settings::default()).is_empty());
    assert!(check(&Settings::test_default()).is_empty());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let mut s = Settings::default();
    s.providers.push(openai_provider("local", "http://127.0.0.1:1/v1", &["m"]));
    s.providers.push(openai_provider("local", "ftp://x", &["m", "m"]));
    s.providers.push(openai_provider("v1", "http://u:p@h/v1", &[]));
    let mut r = crate::support::rotation(
        "coding",
        "weighted",
        vec![
            RotationEntryConfig { provider_id: "nope".into(), model: "m".into(), weight: 1.0, error_cooldown: None },
            RotationEntryConfig { provider_id: "local".into(), model: "m".into(), weight: 0.0, error_cooldown: None },
        ],
    );
    r.sensitive_patterns = vec!["(unclosed".into()];
    s.rotations.push(r);
    s.server.max_body_bytes = 0;
    let problems = check(&s);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "server.max_body_bytes",
        "providers[1].id",
        "providers[1].endpoint",
        "providers[1].models[1].name",
        "providers[2].id",
        "providers[2].endpoint",
        "providers[2].models",
        "rotations[0].entries[0].provider_id",
        "rotations[0].entries[1].weight",
        "rotations[0].sensitive_patterns[0]",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {problems:#?}");
    }
}

/// The shipped examples load over `config/default.toml` and pass every check.
#[test]
fn shipped_examples_are_valid() {
    for file in ["config/default.toml", "config/routing.example.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let s = switchyard::config::load(Some(&path)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let problems = check(&s);
        assert!(problems.is_empty(), "{file}: {problems:#?}");
        assert!(!s.providers.is_empty(), "{file}");
    }
    // The providers example names real vendors' key variables, unset here: those are its only
    // problems.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/providers.example.toml");
    let s = switchyard::config::load(Some(&path)).expect("providers example");
    let kinds: Vec<&str> = s.providers.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["openai", "anthropic", "gemini", "azure"]);
    for p in check(&s) {
        let unset = p.path.ends_with(".api_key") && p.message.contains("is not set");
        assert!(unset, "providers example: {p:?}");
    }
}

#[test]
fn selection_settings_are_checked() {
    use switchyard::config::{AutoselectCandidateConfig, AutoselectConfig};
    let mut s = Settings::default();
    s.providers.push(openai_provider("local", "http://127.0.0.1:1/v1", &["m", "e"]));
    let cand = |route: &str| AutoselectCandidateConfig {
        route: route.into(),
        description: String::new(),
        privacy: false,
        examples: vec![],
    };
    let base = AutoselectConfig {
        name: "a".into(),
        description: String::new(),
        selection: "embedding".into(),
        fallback: None,
        classify_privacy: false,
        classify_semantic: false,
        selection_model: None,
        embedding_route: Some("autoselect/b".into()),
        selection_timeout_ms: 0,
        min_similarity: Some(1.5),
        capabilities: vec![],
        privacy_keywords: vec![],
        privacy_patterns: vec![],
        available_models: vec![cand("provider/local/m")],
        cache_ttl_secs: None,
        cache_scope: Default::default(),
    };
    let mut llm = base.clone();
    llm.name = "b".into();
    llm.selection = "llm".into();
    llm.selection_model = Some("provider/local/nope".into());
    llm.embedding_route = None;
    llm.selection_timeout_ms = 3_000;
    llm.min_similarity = None;
    s.autoselects = vec![base, llm];
    let problems = check(&s);
    let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.path.as_str(), p.message.as_str())).collect();
    for (path, says) in [
        ("autoselects[0].embedding_route", "must not be an autoselect"),
        ("autoselects[0].available_models[0]", "needs a description or examples"),
        ("autoselects[0].selection_timeout_ms", "between 1 and 60000"),
        ("autoselects[0].min_similarity", "between -1 and 1"),
        ("autoselects[1].selection_model", "must name an existing route"),
    ] {
        assert!(found.iter().any(|(p, m)| *p == path && m.contains(says)), "missing {path}: {problems:#?}");
    }
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

/// Azure providers need an `api-version`, and their deployment names go into a URL path.
#[test]
fn azure_providers_are_checked() {
    let azure = |id: &str, version: Option<&str>, models: &[&str]| {
        let mut p = openai_provider(id, "https://res.openai.azure.com", models);
        p.kind = switchyard::types::ProviderKind::Azure;
        p.api_version = version.map(str::to_owned);
        p
    };
    let mut s = Settings::default();
    s.providers.push(azure("good", Some("2024-10-21"), &["gpt-4o.prod_1"]));
    assert!(check(&s).is_empty(), "{:#?}", check(&s));
    s.providers.push(azure("noversion", None, &["m"]));
    s.providers.push(azure("badname", Some("2024-10-21"), &["../admin", "a/b"]));
    s.providers.push(azure("badversion", Some("2024&x=1"), &["m"]));
    let mut openai = openai_provider("plain", "http://127.0.0.1:1/v1", &["m"]);
    openai.api_version = Some("2024-10-21".into());
    s.providers.push(openai);
    let problems = check(&s);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "providers[1].api_version",
        "providers[2].models[0].name",
        "providers[2].models[1].name",
        "providers[3].api_version",
        "providers[4].api_version",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {problems:#?}");
    }
    assert_eq!(paths.len(), 5, "{problems:#?}");
}

/// Gemini model names go in the path (URL-safe, like Azure deployments); only `openai`
/// providers may declare that they serve the Responses API.
#[test]
fn gemini_names_and_responses_api_are_checked() {
    let mut s = Settings::default();
    let mut gemini = openai_provider(
        "ge",
        "https://generativelanguage.googleapis.com/v1beta",
        &["gemini-2.5-flash", "a/b", "x?k=1"],
    );
    gemini.kind = switchyard::types::ProviderKind::Gemini;
    gemini.responses_api = true;
    s.providers.push(gemini);
    let mut openai = openai_provider("oa", "https://api.openai.com/v1", &["gpt-5"]);
    openai.responses_api = true;
    s.providers.push(openai);
    let problems = check(&s);
    let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["providers[0].models[1].name", "providers[0].models[2].name", "providers[0].responses_api"],
        "{problems:#?}"
    );
}
