//! The breaker against the real Redis (`PLT_TEST_REDIS_URL`) behind a fault proxy: calls
//! fail fast while Redis is refused or silent, Redis is not asked while the breaker is open,
//! and a probe closes it once Redis answers again.

use plt_redis::GuardedRedis;
use plt_testkit::{FaultProxy, Mode};
use std::time::{Duration, Instant};

async fn proxied() -> Option<FaultProxy> {
    let Some(url) = std::env::var("PLT_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED Redis breaker: PLT_TEST_REDIS_URL is not set");
        return None;
    };
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(
        url.trim_start_matches("redis://").trim_end_matches('/'),
    )
    .unwrap()
    .next()
    .unwrap();
    Some(FaultProxy::start("redis", upstream).await.unwrap())
}

async fn ping(redis: &GuardedRedis) -> Result<String, plt_redis::Unavailable> {
    redis
        .call(|mut con| async move { redis::cmd("PING").query_async::<String>(&mut con).await })
        .await
}

async fn until_up(redis: &GuardedRedis) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.is_down() {
        assert!(Instant::now() < deadline, "the probe closes the breaker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fails_fast_while_redis_is_gone_and_recovers_by_itself() {
    let Some(proxy) = proxied().await else { return };
    let key = format!("plt:test:{}", uuid::Uuid::new_v4().simple());
    let redis = GuardedRedis::new(
        &format!("redis://{}", proxy.addr()),
        Duration::from_millis(100),
        Duration::from_millis(300),
        "test",
    )
    .unwrap();
    assert_eq!(ping(&redis).await.unwrap(), "PONG");
    let script = redis::Script::new("return redis.call('INCR', KEYS[1])");
    let inv = script.key(&key);
    assert_eq!(redis.script::<i64>(&inv).await.unwrap(), 1);

    for mode in [Mode::Silent, Mode::Refuse] {
        proxy.set(mode);
        let started = Instant::now();
        assert!(ping(&redis).await.is_err(), "{mode:?}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{mode:?}: failed within the timeout, took {:?}",
            started.elapsed()
        );
        assert!(redis.is_down(), "{mode:?} opened the breaker");
        let asked = proxy.received();
        let started = Instant::now();
        for _ in 0..100 {
            assert!(redis.script::<i64>(&inv).await.is_err());
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "answers at once"
        );
        // Only the probe (a PING every 300ms) may have reached the proxy meanwhile.
        assert!(proxy.received() - asked <= 14 * 2, "{mode:?}: not asked");

        proxy.set(Mode::Pass);
        until_up(&redis).await;
        assert!(
            redis.script::<i64>(&inv).await.unwrap() >= 2,
            "{mode:?}: Redis decides again"
        );
    }
}
