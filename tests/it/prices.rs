//! Prices live in the database: `[[prices]]` seeds them, run-time changes price the next records,
//! a provider-specific price beats the generic one, and aliases match.

use std::time::Duration;

use switchyard::config::PriceConfig;
use switchyard::store::PriceRow;

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, openai_provider, post_json};

#[actix_web::test]
async fn usage_is_priced_from_the_price_table() {
    let mock = MockUpstream::start(1);
    let base = mock.base();
    let app = TestApp::spawn(|s| {
        s.providers.push(openai_provider("a", &base, &["m", "old-name"]));
        s.providers.push(openai_provider("b", &base, &["m"]));
        s.prices.push(PriceConfig {
            model: "m".into(),
            provider: None,
            input_per_million: 1_000.0,
            output_per_million: 2_000.0,
            cached_input_per_million: None,
            cache_write_per_million: None,
            aliases: vec![],
        });
    })
    .await;
    // The mock reports 11 prompt tokens (4 of them cached) and 6 completion tokens.
    let cost = |model: &str| {
        let app = &app;
        let model = model.to_owned();
        async move {
            let r = post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat(&model, "hi")).await;
            assert_eq!(r.status, 200, "{}", r.text());
            app.usage(r.header("x-request-id").unwrap()).await.cost_usd
        }
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // Seeded from [[prices]]: (7 + 4) × 1000/1M + 6 × 2000/1M (cached input at the input price).
    assert!(close(cost("provider/a/m").await, 0.023));

    let c = app.control().await;
    assert_eq!(c.list_prices().await.unwrap().len(), 1, "[[prices]] seeded the table");
    c.put_price(&PriceRow {
        model: "m".into(),
        provider: String::new(),
        input_per_million: 1_000.0,
        output_per_million: 2_000.0,
        cached_input_per_million: Some(500.0),
        cache_write_per_million: None,
        aliases: vec!["old-name".into()],
    })
    .await
    .unwrap();
    c.put_price(&PriceRow {
        model: "m".into(),
        provider: "b".into(),
        input_per_million: 0.0,
        output_per_million: 0.0,
        cached_input_per_million: None,
        cache_write_per_million: None,
        aliases: vec![],
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(close(cost("provider/a/m").await, 0.021), "a run-time price change applies to the next record");
    assert!(close(cost("provider/a/old-name").await, 0.021), "aliases share the price");
    assert!(close(cost("provider/b/m").await, 0.0), "a provider's own price beats the generic one");
    app.stop().await;
}
