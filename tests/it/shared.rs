//! One contract for both shared-state implementations: in-process and Redis.

use std::sync::Arc;
use std::time::Duration;

use switchyard::shared::{MemoryShared, RedisShared, SharedState};
use switchyard::types::now_ms;
use tokio_util::sync::CancellationToken;

use crate::support::{service_url, unique};

async fn redis() -> Arc<dyn SharedState> {
    let url = service_url("SWITCHYARD_TEST_REDIS_URL");
    Arc::new(RedisShared::connect(&url, &format!("{}:", unique("t")), 4).await.expect("redis"))
}

async fn contract(s: Arc<dyn SharedState>) {
    s.ping().await.unwrap();

    // Windows: check-and-add, refused amounts are not counted.
    let w = s.window_add("rpm:a", 60_000, 1, Some(3)).await.unwrap();
    assert!(w.allowed && w.count == 1 && w.reset_ms <= 60_000);
    assert!(s.window_add("rpm:a", 60_000, 2, Some(3)).await.unwrap().allowed);
    let refused = s.window_add("rpm:a", 60_000, 1, Some(3)).await.unwrap();
    assert!(!refused.allowed && refused.count == 3);
    assert_eq!(s.window_add("rpm:a", 60_000, 0, None).await.unwrap().count, 3);
    assert!(s.window_add("rpm:a", 60_000, 10, None).await.unwrap().allowed);
    assert!(!s.window_add("rpm:b", 60_000, 1, Some(0)).await.unwrap().allowed, "limit 0 allows nothing");
    // A short window resets.
    assert!(s.window_add("rps", 200, 1, Some(1)).await.unwrap().allowed);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(s.window_add("rps", 200, 1, Some(1)).await.unwrap().allowed);

    // Concurrent window adds never over-admit.
    let mut handles = Vec::new();
    for _ in 0..40 {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move { s.window_add("race", 60_000, 1, Some(25)).await.unwrap().allowed }));
    }
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    assert_eq!(admitted, 25);

    // Slots: limit, renewal by the same holder, release, lease expiry.
    assert!(s.slot_acquire("conc", "r1", 2, 10_000).await.unwrap());
    assert!(s.slot_acquire("conc", "r2", 2, 10_000).await.unwrap());
    assert!(!s.slot_acquire("conc", "r3", 2, 10_000).await.unwrap());
    assert!(s.slot_acquire("conc", "r1", 2, 10_000).await.unwrap(), "a holder renews its own slot");
    assert_eq!(s.slot_count("conc").await.unwrap(), 2);
    s.slot_release("conc", "r1").await.unwrap();
    assert!(s.slot_acquire("conc", "r3", 2, 10_000).await.unwrap());
    assert!(s.slot_acquire("lease", "x", 1, 150).await.unwrap());
    assert!(!s.slot_acquire("lease", "y", 1, 150).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.slot_acquire("lease", "y", 1, 150).await.unwrap(), "an expired lease frees its slot");
    assert!(!s.slot_acquire("zero", "x", 0, 1000).await.unwrap());

    // Cooldowns only grow.
    let now = now_ms();
    assert_eq!(s.cooldown_until("p1").await.unwrap(), None);
    assert_eq!(s.cooldown_extend("p1", now + 5_000).await.unwrap(), now + 5_000);
    assert_eq!(s.cooldown_extend("p1", now + 1_000).await.unwrap(), now + 5_000, "a shorter deadline never shortens");
    assert_eq!(s.cooldown_until("p1").await.unwrap(), Some(now + 5_000));
    assert_eq!(s.cooldown_extend("p1", now + 9_000).await.unwrap(), now + 9_000);
    s.cooldown_extend("p2", now_ms() + 150).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.cooldown_until("p2").await.unwrap(), None, "a passed deadline is gone");

    // Property: over any sequence of proposals, the deadline in force is the running maximum.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let base = now_ms() + 60_000;
    let mut max = 0i64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let proposal = base + i64::try_from(x % 100_000).unwrap();
        max = max.max(proposal);
        assert_eq!(s.cooldown_extend("prop", proposal).await.unwrap(), max);
    }
    assert_eq!(s.cooldown_until("prop").await.unwrap(), Some(max));

    // Key/value with TTL.
    // Several windows at once: all admitted or none; negative amounts correct, floored at 0.
    use switchyard::shared::WindowCheck;
    let check =
        |key: &str, amount: i64, limit: Option<u64>| WindowCheck { key: key.into(), window_ms: 60_000, amount, limit };
    let a = s.windows_add(&[check("rpm:t", 1, Some(2)), check("tpm:t", 40, Some(100))]).await.unwrap();
    assert!(a.allowed);
    let a = s.windows_add(&[check("rpm:t", 1, Some(2)), check("tpm:t", 70, Some(100))]).await.unwrap();
    assert!(!a.allowed && a.retry_after_ms > 0 && a.retry_after_ms <= 60_000, "{a:?}");
    // The refused call added nothing: rpm is still 1, so a small request fits.
    assert!(s.windows_add(&[check("rpm:t", 1, Some(2)), check("tpm:t", 60, Some(100))]).await.unwrap().allowed);
    assert!(!s.windows_add(&[check("rpm:t", 1, Some(2))]).await.unwrap().allowed, "rpm 2 reached");
    // A correction gives back what a request did not use.
    assert!(s.windows_add(&[check("tpm:t", -50, None)]).await.unwrap().allowed);
    assert!(s.windows_add(&[check("tpm:t", 50, Some(100))]).await.unwrap().allowed, "100 - 50 + 50");
    assert!(s.windows_add(&[check("tpm:t", -1_000, None)]).await.unwrap().allowed);
    assert_eq!(s.window_add("tpm:t", 60_000, 0, None).await.unwrap().count, 0, "floored at 0");
    assert!(s.windows_add(&[]).await.unwrap().allowed);
    // A quota-like counter: rebuilt once from a durable total, then an amount of 0 is refused
    // once the limit is reached.
    assert!(s.window_init("spend:t", 60_000, 70).await.unwrap());
    assert!(!s.window_init("spend:t", 60_000, 5).await.unwrap(), "init never overwrites");
    assert!(s.windows_add(&[check("spend:t", 0, Some(100))]).await.unwrap().allowed);
    assert!(s.windows_add(&[check("spend:t", 30, Some(100))]).await.unwrap().allowed);
    assert!(!s.windows_add(&[check("spend:t", 0, Some(100))]).await.unwrap().allowed, "spent");
    assert!(!s.windows_add(&[check("none", 0, Some(0))]).await.unwrap().allowed, "a limit of 0 allows nothing");

    // The usage ledger: started records, atomic finish into the stream, orphans, the group.
    s.ledger_start("n1", "r1", "{\"a\":1}").await.unwrap();
    s.ledger_start("n1", "r2", "{\"a\":2}").await.unwrap();
    assert!(s.ledger_orphans(&["n1".into()], 100).await.unwrap().is_empty(), "a live node has no orphans");
    let orphans = s.ledger_orphans(&[], 100).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].0, "n1");
    assert_eq!(orphans[0].1.len(), 2);
    s.ledger_finish("n1", &[("r1".into(), "final-1".into())]).await.unwrap();
    let orphans = s.ledger_orphans(&[], 100).await.unwrap();
    assert_eq!(orphans[0].1, vec![("r2".to_owned(), "{\"a\":2}".to_owned())]);
    let got = s.ledger_read("c1", 10, 60_000).await.unwrap();
    assert_eq!(got.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(), ["final-1"]);
    assert!(s.ledger_read("c2", 10, 60_000).await.unwrap().is_empty(), "read by c1, not yet stale");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let claimed = s.ledger_read("c2", 10, 5).await.unwrap();
    assert_eq!(claimed.len(), 1, "a stale entry of another consumer is claimed");
    s.ledger_ack(&claimed.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(s.ledger_read("c3", 10, 5).await.unwrap().is_empty(), "acknowledged entries are gone");
    s.ledger_finish("n1", &[("r2".into(), "final-2".into())]).await.unwrap();
    assert!(s.ledger_orphans(&[], 100).await.unwrap().is_empty());
    assert_eq!(s.ledger_read("c1", 10, 60_000).await.unwrap().len(), 1);
    s.ledger_start("n2", "r3", "{}").await.unwrap();
    s.ledger_forget("n2", &["r3".into()]).await.unwrap();
    assert!(s.ledger_orphans(&[], 100).await.unwrap().is_empty(), "a forgotten entry is no orphan");
    s.slot_acquire("reg", "node-a", u64::MAX, 10_000).await.unwrap();
    assert_eq!(s.slot_holders("reg").await.unwrap(), vec!["node-a".to_owned()]);

    // Streaks: consecutive counts that reset on demand and expire after the last increment.
    for n in 1..=3 {
        assert_eq!(s.streak_add("fails", 10_000).await.unwrap(), n);
    }
    s.streak_reset("fails").await.unwrap();
    assert_eq!(s.streak_add("fails", 150).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(s.streak_add("fails", 10_000).await.unwrap(), 1, "an expired streak starts over");
    s.streak_reset("never-set").await.unwrap();

    s.kv_set("sess", b"v1", 10_000).await.unwrap();
    assert_eq!(s.kv_get("sess").await.unwrap().as_deref(), Some(&b"v1"[..]));
    s.kv_set("sess", b"v2", 10_000).await.unwrap();
    assert_eq!(s.kv_get("sess").await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(s.kv_delete("sess").await.unwrap());
    assert!(!s.kv_delete("sess").await.unwrap());
    assert_eq!(s.kv_get("sess").await.unwrap(), None);
    s.kv_set("short", b"x", 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(s.kv_get("short").await.unwrap(), None);

    // Announcements reach subscribers, and versions never go back.
    let cancel = CancellationToken::new();
    let runner = {
        let s = Arc::clone(&s);
        let c = cancel.clone();
        tokio::spawn(async move { s.run(c).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rx = s.catalog_versions();
    s.publish_catalog_version(7).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while *rx.borrow_and_update() < 7 {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("announcement not received");
    s.publish_catalog_version(3).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*s.catalog_versions().borrow(), 7);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), runner).await.expect("run() stops on cancel").unwrap();
}

#[tokio::test]
async fn memory_implementation_meets_the_contract() {
    contract(Arc::new(MemoryShared::new())).await;
}

#[tokio::test]
async fn redis_implementation_meets_the_contract() {
    contract(redis().await).await;
}

#[tokio::test]
async fn redis_announcements_cross_instances() {
    let url = service_url("SWITCHYARD_TEST_REDIS_URL");
    let prefix = format!("{}:", unique("x"));
    let a: Arc<dyn SharedState> = Arc::new(RedisShared::connect(&url, &prefix, 2).await.unwrap());
    let b: Arc<dyn SharedState> = Arc::new(RedisShared::connect(&url, &prefix, 2).await.unwrap());
    let cancel = CancellationToken::new();
    let runner = {
        let b = Arc::clone(&b);
        let c = cancel.clone();
        tokio::spawn(async move { b.run(c).await })
    };
    let mut rx = b.catalog_versions();
    // The subscriber may connect after this; it then catches up from the stored version.
    a.publish_catalog_version(42).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while *rx.borrow_and_update() < 42 {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("node B never heard of version 42");
    // Windows and slots are shared between instances.
    assert!(a.window_add("shared", 60_000, 1, Some(1)).await.unwrap().allowed);
    assert!(!b.window_add("shared", 60_000, 1, Some(1)).await.unwrap().allowed);
    cancel.cancel();
    runner.await.unwrap();
}

#[tokio::test]
async fn redis_down_is_an_error_not_a_hang() {
    let r = RedisShared::connect("redis://127.0.0.1:1/0", "t:", 1).await;
    assert!(r.is_err());
}
