//! Ids good for one use across every replica: the first claim of an id within its lifetime
//! wins (`SET NX PX`), every later one is refused. Settlement claims the id of each service
//! assertion that changes something, so a captured one cannot be replayed.

use std::time::Duration;

use super::connection::{ConnectOptions, RedisConnection};

pub struct SingleUseIds {
    conn: RedisConnection,
    prefix: String,
}

impl SingleUseIds {
    /// Ids kept under `<prefix>:once:<id>`.
    pub async fn connect(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let conn = RedisConnection::connect(url, &ConnectOptions::default()).await?;
        Ok(SingleUseIds {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// `true` the first time `id` is claimed within `lifetime`, `false` afterwards.
    pub async fn claim(&self, id: &str, lifetime: Duration) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:once:{id}", self.prefix))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(lifetime.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }
}
