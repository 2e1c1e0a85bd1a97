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
