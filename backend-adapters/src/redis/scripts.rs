//! The Lua scripts of the reservation store, one per operation (`lua/*.lua`, each headed by
//! its KEYS, ARGV and reply), and how they are sent: `EVALSHA`, and on `NOSCRIPT` (a restarted
//! or flushed Redis) `SCRIPT LOAD` and one more `EVALSHA`.

use redis::{Cmd, RedisResult, Script};

use super::connection::RedisConnection;

/// The script `lua/<file>` with `lua/lib/give_back.lua` in front: the scripts that give units
/// back or end a hold share its functions. Redis has no `require` for EVAL scripts, so the
/// library is joined in at build time; Lua needs a local function defined before its use.
macro_rules! with_give_back {
    ($file:literal) => {
        concat!(
            include_str!("lua/lib/give_back.lua"),
            include_str!(concat!("lua/", $file))
        )
    };
}

/// Every script of the store, hashed once at start.
pub(crate) struct Scripts {
    pub configure_product: Script,
    pub reserve: Script,
    pub get_hold: Script,
    pub release: Script,
    pub begin_confirm: Script,
    pub finish_confirm: Script,
    pub abort_confirm: Script,
    pub expire_due: Script,
    pub confirming_holds: Script,
    pub list_buyer_holds: Script,
    pub return_cancelled: Script,
    pub begin_repair: Script,
    pub repair_counters: Script,
    pub undo_reserve: Script,
    pub claim_binding: Script,
    pub drop_binding: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            configure_product: Script::new(include_str!("lua/configure_product.lua")),
            reserve: Script::new(include_str!("lua/reserve.lua")),
            get_hold: Script::new(include_str!("lua/get_hold.lua")),
            release: Script::new(with_give_back!("release.lua")),
            begin_confirm: Script::new(with_give_back!("begin_confirm.lua")),
            finish_confirm: Script::new(with_give_back!("finish_confirm.lua")),
            abort_confirm: Script::new(with_give_back!("abort_confirm.lua")),
            expire_due: Script::new(with_give_back!("expire_due.lua")),
            confirming_holds: Script::new(include_str!("lua/confirming_holds.lua")),
            list_buyer_holds: Script::new(include_str!("lua/list_buyer_holds.lua")),
            return_cancelled: Script::new(with_give_back!("return_cancelled.lua")),
            begin_repair: Script::new(include_str!("lua/begin_repair.lua")),
            repair_counters: Script::new(include_str!("lua/repair_counters.lua")),
            undo_reserve: Script::new(with_give_back!("undo_reserve.lua")),
            claim_binding: Script::new(include_str!("lua/claim_binding.lua")),
            drop_binding: Script::new(include_str!("lua/drop_binding.lua")),
        }
    }

    pub fn all(&self) -> [&Script; 16] {
        [
            &self.configure_product,
            &self.reserve,
            &self.get_hold,
            &self.release,
            &self.begin_confirm,
            &self.finish_confirm,
            &self.abort_confirm,
            &self.expire_due,
            &self.confirming_holds,
            &self.list_buyer_holds,
            &self.return_cancelled,
            &self.begin_repair,
            &self.repair_counters,
            &self.undo_reserve,
            &self.claim_binding,
            &self.drop_binding,
        ]
    }

    /// Loads every script into Redis' script cache (`SCRIPT LOAD` is idempotent; on a
    /// cluster redis-rs sends it to every master).
    pub async fn load_all(&self, conn: &mut RedisConnection) -> RedisResult<()> {
        for script in self.all() {
            script.load_async(conn).await?;
        }
        Ok(())
    }

    /// Whether Redis has every script cached (`SCRIPT EXISTS`), for readiness checks. On a
    /// cluster it asks every master and a script counts only if all of them have it.
    pub async fn all_loaded(&self, conn: &mut RedisConnection) -> RedisResult<bool> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("EXISTS");
        for script in self.all() {
            cmd.arg(script.get_hash());
        }
        let found: Vec<bool> = cmd.query_async(conn).await?;
        Ok(found.iter().all(|&f| f))
    }
}

/// `EVALSHA <sha> <numkeys> keys... args...`. Built by hand rather than with
/// `ScriptInvocation` so it can also go into a pipeline (reserve sends it beside a `SET`).
pub(crate) fn evalsha(script: &Script, keys: &[&str], args: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}
