//! The Redis backend: `GET`, `SET … PX`, `DEL` through plt-redis's [`GuardedRedis`], so a
//! failing Redis answers at once (an error the cache turns into a miss) instead of stalling.

use bytes::Bytes;
use plt_redis::{GuardedRedis, Unavailable};
use std::time::Duration;

pub(crate) struct RedisStore {
    redis: GuardedRedis,
}

impl RedisStore {
    pub(crate) fn new(redis: GuardedRedis) -> Self {
        Self { redis }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.redis.is_down()
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        let v: Option<Vec<u8>> = self
            .redis
            .call(|mut con| async move { redis::cmd("GET").arg(key).query_async(&mut con).await })
            .await?;
        Ok(v.map(Bytes::from))
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), Unavailable> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.redis
            .call(|mut con| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Unavailable> {
        self.redis
            .call(|mut con| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await
    }
}
