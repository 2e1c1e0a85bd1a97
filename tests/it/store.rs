//! The store on SQLite, PostgreSQL and MariaDB: the same tests on all three.

use switchyard::store::{self, NewToken, NewUser, Store, StoreError, UsageRow};
use switchyard::types::{Role, now_ms};

use crate::support::{fresh_database, service_url};

fn usage(id: &str, user: i64) -> UsageRow {
    UsageRow {
        request_id: id.into(),
        created_at: now_ms(),
        node: "n1".into(),
        user_id: Some(user),
        token_id: None,
        route: "provider/a/m".into(),
        provider: Some("a".into()),
        model: Some("m".into()),
        status: 200,
        outcome: "ok".into(),
        stream: false,
        prompt_tokens: 3,
        completion_tokens: 4,
        cached_tokens: 0,
        cache_write_tokens: 0,
        estimated: false,
        cost_usd: 0.25,
        latency_ms: 12,
        ttft_ms: Some(5),
        cache_hit: false,
        routing: Some(r#"{"route":"rotation/r"}"#.into()),
        usage_source: "reported".into(),
        partial: false,
        parent_request_id: None,
    }
}

async fn suite(url: &str) {
    let s = Store::connect(url, 4).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    let db = s.conn();
    assert_eq!(store::count_users(db).await.unwrap(), 0);
    let v0 = store::catalog_version(db).await.unwrap();
    assert_eq!(store::bump_catalog_version(db).await.unwrap(), v0 + 1);

    let alice = store::create_user(
        db,
        NewUser { username: "alice", role: Role::Admin, tier: Some("gold"), password_hash: None },
    )
    .await
    .unwrap();
    assert!(matches!(
        store::create_user(db, NewUser { username: "alice", role: Role::User, tier: None, password_hash: None }).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store::find_user(db, "alice").await.unwrap().unwrap().role, Role::Admin);
    assert!(store::find_user(db, "' OR '1'='1").await.unwrap().is_none());
    let disabled = store::set_user_status(db, "alice", "disabled").await.unwrap();
    assert!(!disabled.is_active());
    assert!(matches!(store::set_user_status(db, "ghost", "disabled").await, Err(StoreError::NotFound)));

    let t = store::create_token(
        db,
        NewToken {
            user_id: alice.id,
            name: "ci".into(),
            token_hash: "ab".repeat(32),
            display_prefix: "sy-abcdef0".into(),
            routes: Some(vec!["provider/*".into()]),
            quota_usd: Some(0.0),
            rpm: None,
            tpm: None,
            expires_at: Some(now_ms() + 1000),
            created_at: now_ms(),
            parent_id: None,
        },
    )
    .await
    .unwrap();
    let found = store::find_token_by_hash(db, &"ab".repeat(32)).await.unwrap().unwrap();
    assert_eq!(found.routes, Some(vec!["provider/*".to_owned()]));
    assert_eq!(store::list_active_tokens(db).await.unwrap().len(), 1);
    store::revoke_token(db, t.id).await.unwrap();
    assert!(store::list_active_tokens(db).await.unwrap().is_empty());
    store::touch_tokens(db, &[t.id], 1234).await.unwrap();
    assert_eq!(store::list_tokens(db, alice.id).await.unwrap()[0].last_used_at, Some(1234));

    // Usage inserts are idempotent by request id.
    let batch: Vec<UsageRow> = (0..50).map(|i| usage(&format!("req-{i:03}"), alice.id)).collect();
    store::insert_usage_batch(db, &batch).await.unwrap();
    store::insert_usage_batch(db, &batch[10..20]).await.unwrap();
    let mut mixed = batch[0..5].to_vec();
    mixed.push(usage("req-new", alice.id));
    store::insert_usage_batch(db, &mixed).await.unwrap();
    assert_eq!(store::count_usage(db).await.unwrap(), 51);
    let one = store::find_usage(db, "req-007").await.unwrap().unwrap();
    assert_eq!(one, batch[7]);
    assert_eq!(store::list_usage(db, Some(alice.id), 10).await.unwrap().len(), 10);

    // Tiers and prices: put replaces, lists are ordered, deletes report absence.
    let gold = store::TierRow {
        name: "gold".into(),
        rpm: Some(60),
        tpm: None,
        max_concurrency: Some(4),
        monthly_quota_usd: Some(12.5),
        routes: Some(vec!["provider/*".into(), "rotation/coding".into()]),
        max_tokens: Some(2048),
    };
    assert_eq!(store::put_tier(db, &gold).await.unwrap(), gold);
    let cheaper = store::TierRow { rpm: Some(10), routes: None, ..gold.clone() };
    assert_eq!(store::put_tier(db, &cheaper).await.unwrap(), cheaper);
    store::put_tier(db, &store::TierRow { name: "bronze".into(), ..Default::default() }).await.unwrap();
    let names: Vec<String> = store::list_tiers(db).await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["bronze", "gold"]);
    assert_eq!(store::count_users_on_tier(db, "gold").await.unwrap(), 1);
    assert_eq!(store::set_user_tier(db, "alice", Some("bronze")).await.unwrap().tier.as_deref(), Some("bronze"));
    assert!(matches!(store::delete_tier(db, "nope").await, Err(StoreError::NotFound)));
    store::delete_tier(db, "gold").await.unwrap();
    let price = store::PriceRow {
        model: "gpt-4".into(),
        provider: String::new(),
        input_per_million: 30.0,
        output_per_million: 60.0,
        cached_input_per_million: Some(15.0),
        cache_write_per_million: None,
        aliases: vec!["gpt-4-turbo".into()],
    };
    store::put_price(db, &price).await.unwrap();
    store::put_price(db, &store::PriceRow { provider: "azure".into(), input_per_million: 25.0, ..price.clone() })
        .await
        .unwrap();
    let raised = store::PriceRow { output_per_million: 61.0, ..price.clone() };
    store::put_price(db, &raised).await.unwrap();
    assert_eq!(store::find_price(db, "gpt-4", "").await.unwrap(), Some(raised));
    assert_eq!(store::list_prices(db).await.unwrap().len(), 2);
    store::delete_price(db, "gpt-4", "azure").await.unwrap();
    assert!(matches!(store::delete_price(db, "gpt-4", "azure").await, Err(StoreError::NotFound)));

    s.migrate_down().await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(store::count_users(db).await.unwrap(), 0);
    s.close().await;
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&format!("sqlite://{}/s.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let url = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    suite(&url).await;
}

#[tokio::test]
async fn store_on_mariadb() {
    let url = fresh_database(&service_url("SWITCHYARD_TEST_MYSQL_URL")).await;
    suite(&url).await;
}
