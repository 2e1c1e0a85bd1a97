//! The store on SQLite, PostgreSQL and MariaDB: the same tests on all three.

use switchyard::store::{self, NewToken, NewUser, Store, StoreError, UsageRow};
use switchyard::types::{Role, now_ms};

use crate::support::{fresh_database, service_url};

fn usage(id: &str, user: i64) -> UsageRow {
    UsageRow {
        request_id: id.into(),
        // One fixed hour, so the rollups of a test have one row.
        created_at: 1_789_999_200_000 + 1234,
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
        NewUser {
            username: "alice",
            role: Role::Admin,
            tier: Some("gold"),
            password_hash: None,
            email: Some("alice@example.com".into()),
            identity: Some(("https://idp".into(), "sub-1".into())),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        store::create_user(
            db,
            NewUser {
                username: "alice",
                role: Role::User,
                tier: None,
                password_hash: None,
                email: None,
                identity: None
            }
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store::find_user(db, "alice").await.unwrap().unwrap().role, Role::Admin);
    // Identities and e-mails: one identity is one user's.
    let found = store::find_user_by_identity(db, "https://idp", "sub-1").await.unwrap().unwrap();
    assert_eq!((found.id, found.email.as_deref()), (alice.id, Some("alice@example.com")));
    assert!(store::find_user_by_identity(db, "https://idp", "sub-2").await.unwrap().is_none());
    assert_eq!(store::find_users_by_email(db, "alice@example.com").await.unwrap().len(), 1);
    let bob = store::create_user(
        db,
        NewUser { username: "bob", role: Role::User, tier: None, password_hash: None, email: None, identity: None },
    )
    .await
    .unwrap();
    let steal = store::UserChange { identity: Some(("https://idp".into(), "sub-1".into())), ..Default::default() };
    assert!(matches!(store::update_user(db, bob.id, steal).await, Err(StoreError::Conflict)));
    let hash = store::UserChange { password_hash: Some("$argon2id$x".into()), ..Default::default() };
    assert_eq!(store::update_user(db, bob.id, hash).await.unwrap().password_hash.as_deref(), Some("$argon2id$x"));
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
            worker_provider: None,
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

    // Rollups count each stored record once, replays and duplicates in a batch included, by
    // hour and by day alike; the migration that makes them rolls up the records already there.
    let (alice_id, first) = (alice.id, batch[0].created_at);
    let check_rollups = |want: i64| async move {
        for span in [store::Span::Hour, store::Span::Day] {
            let all = store::query_rollups(db, span, &store::RollupFilter::default(), false, None).await.unwrap();
            assert_eq!(all.len(), 1);
            let t = &all[0].sums;
            assert_eq!((t.requests, t.prompt_tokens, t.completion_tokens), (want, 3 * want, 4 * want), "{span:?}");
            assert!((t.cost_usd - 0.25 * f64::from(i32::try_from(want).unwrap())).abs() < 1e-9);
            assert_eq!(t.histogram.iter().sum::<i64>(), want);
            assert_eq!(t.histogram[store::latency_bucket(12)], want);
            let mine = store::RollupFilter { user_id: Some(alice_id), ..Default::default() };
            let by_route = store::query_rollups(db, span, &mine, true, Some(store::Dimension::Route)).await.unwrap();
            assert_eq!(by_route.len(), 1);
            assert_eq!(by_route[0].key.as_deref(), Some("provider/a/m"));
            assert_eq!(by_route[0].bucket, Some(span.floor(first)));
            let other = store::RollupFilter { user_id: Some(alice_id + 1000), ..Default::default() };
            let none = store::query_rollups(db, span, &other, false, None).await.unwrap();
            assert_eq!(none.first().map_or(0, |g| g.sums.requests), 0);
        }
    };
    // Every record in the same hour, so one rollup row each.
    check_rollups(51).await;
    let mut twice = vec![usage("req-dup", alice.id), usage("req-dup", alice.id)];
    twice[1].created_at = twice[0].created_at;
    store::insert_usage_batch(db, &twice).await.unwrap();
    check_rollups(52).await;
    // Two writers of the same records at once (a replayed ledger entry): counted once.
    let race: Vec<UsageRow> = (0..20).map(|i| usage(&format!("race-{i:02}"), alice.id)).collect();
    let (a, b) = tokio::join!(store::insert_usage_batch(db, &race), store::insert_usage_batch(db, &race));
    assert_eq!(a.unwrap() + b.unwrap(), 20);
    check_rollups(72).await;
    s.rollback(1).await.unwrap();
    s.migrate().await.unwrap();
    check_rollups(72).await;

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
