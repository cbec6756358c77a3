//! A fenced distributed lock on Redis: a lease (SET NX PX) plus a fencing token (INCR of a
//! per-lock counter) taken in one Lua script, released by its owner only.
//!
//! The lease alone cannot stop a holder that paused (GC, network) past its lease from writing
//! after a newer holder took over; the token can: the protected store accepts a write only with
//! a token larger than the last one it saw (in SQL: `WHERE fence < $token`). Tokens only grow
//! while the counter key lives; after Redis lost it, a caller passes the highest token the
//! store has seen as a floor ([`FencedLock::acquire_above`]), so new tokens still beat every
//! token already written.

use std::time::Duration;

use redis::Script;
use thiserror::Error;

use super::connection::{ConnectOptions, RedisConnection};

/// Lock failures. "Someone else holds it" is not an error but `Ok(None)`.
#[derive(Debug, Error)]
pub enum LockError {
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("lock name {0:?} may not be empty or contain braces")]
    InvalidName(String),
}

/// A held lease: the fencing token to present to the protected store, and the owner id that
/// releases it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLease {
    pub name: String,
    pub owner: String,
    pub fence: u64,
}

/// Named fenced locks under one key prefix. Cheap to clone (the connection is multiplexed).
#[derive(Clone)]
pub struct FencedLock {
    conn: RedisConnection,
    prefix: String,
    acquire: Script,
    release: Script,
}

impl FencedLock {
    pub fn new(conn: impl Into<RedisConnection>, prefix: &str) -> Self {
        FencedLock {
            conn: conn.into(),
            prefix: prefix.to_owned(),
            acquire: Script::new(include_str!("lua/lock_acquire.lua")),
            release: Script::new(include_str!("lua/lock_release.lua")),
        }
    }

    /// Opens a reconnecting connection to `url` (one server or a cluster: the lock's two keys
    /// share the `{name}` slot).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, LockError> {
        let conn = RedisConnection::connect(url, &ConnectOptions::default()).await?;
        Ok(Self::new(conn, prefix))
    }

    /// `<prefix>:lock:{<name>}` and its fence counter, one hash slot.
    fn keys(&self, name: &str) -> Result<(String, String), LockError> {
        if name.is_empty() || name.contains('{') || name.contains('}') {
            return Err(LockError::InvalidName(name.to_owned()));
        }
        let lock = format!("{}:lock:{{{}}}", self.prefix, name);
        let fence = format!("{lock}:fence");
        Ok((lock, fence))
    }

    /// One attempt: the lease and its token, or `None` when another owner holds the lock.
    /// Calling again as the current owner renews the lease and keeps the token.
    pub async fn try_acquire(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<LockLease>, LockError> {
        self.try_acquire_above(name, owner, lease, 0).await
    }

    /// [`try_acquire`](Self::try_acquire) whose token, if new, exceeds `floor`.
    pub async fn try_acquire_above(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
        floor: u64,
    ) -> Result<Option<LockLease>, LockError> {
        let (lock_key, fence_key) = self.keys(name)?;
        let mut conn = self.conn.clone();
        let fence: u64 = self
            .acquire
            .key(lock_key)
            .key(fence_key)
            .arg(owner)
            .arg(lease.as_millis().max(1) as u64)
            .arg(floor)
            .invoke_async(&mut conn)
            .await?;
        Ok((fence > 0).then(|| LockLease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            fence,
        }))
    }

    /// Tries to acquire for up to `wait`, retrying every few milliseconds, with a fresh
    /// random owner id.
    pub async fn acquire(
        &self,
        name: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<LockLease>, LockError> {
        self.acquire_above(name, lease, wait, 0).await
    }

    /// [`acquire`](Self::acquire) with a token above `floor` (the highest fence the protected
    /// store holds), which keeps tokens ahead of the store after Redis lost the counter.
    pub async fn acquire_above(
        &self,
        name: &str,
        lease: Duration,
        wait: Duration,
        floor: u64,
    ) -> Result<Option<LockLease>, LockError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(held) = self.try_acquire_above(name, &owner, lease, floor).await? {
                return Ok(Some(held));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Gives the lease back if it is still ours; `false` when it had expired (and maybe been
    /// taken by someone else, whose lease is left alone).
    pub async fn release(&self, lease: &LockLease) -> Result<bool, LockError> {
        let (lock_key, _) = self.keys(&lease.name)?;
        let mut conn = self.conn.clone();
        let released: i64 = self
            .release
            .key(lock_key)
            .arg(&lease.owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_are_headed_by_their_contract() {
        for script in [
            include_str!("lua/lock_acquire.lua"),
            include_str!("lua/lock_release.lua"),
        ] {
            assert!(script.contains("-- KEYS[1]"));
            assert!(script.contains("-- ARGV[1]"));
            assert!(script.contains("-- Returns:"));
        }
    }
}
