//! The Redis peer: the same check-and-decrement as a Lua script, as Redis-backed limiters do.
//!
//! Keys are 4 limits and a task budget; the script checks that every limit keeps the tier's
//! floor after the debit and that the task budget covers it, then debits all five, or none and
//! returns which key refused (1-based). It runs with `EVALSHA` on a synchronous connection,
//! one round trip per reservation. A full reserve + commit on Redis would be a second round
//! trip (the refund); the bench times only the first, which flatters Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::{Client, Cmd, Connection, RedisError};

/// Environment variable with the Redis URL, shared with the test suite.
pub const URL_VAR: &str = "TOLLGATE_TEST_REDIS_URL";
/// Default when [`URL_VAR`] is unset.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Check all, then debit all. `KEYS[1..4]` limits, `KEYS[5]` the task budget;
/// `ARGV[1]` amount, `ARGV[2]` the tier's floor on the limits. Returns 0 or the refusing key.
pub const SCRIPT: &str = r#"
local amount = tonumber(ARGV[1])
local floor = tonumber(ARGV[2])
for i = 1, #KEYS do
  local have = tonumber(redis.call('GET', KEYS[i]) or '0')
  local need = amount
  if i < #KEYS then need = amount + floor end
  if have < need then return i end
end
for i = 1, #KEYS do
  redis.call('DECRBY', KEYS[i], amount)
end
return 0
"#;

/// The Redis URL to use: [`URL_VAR`] or [`DEFAULT_URL`].
pub fn url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A connection with the script loaded and the keys set up.
pub struct RedisLimiter {
    con: Connection,
    keys: Vec<String>,
    reserve: Cmd,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects (1 s timeout), sets 4 limit keys to `per_limit` and a task budget key to `task`
    /// under a prefix unique to this limiter, loads the script and prepares the `EVALSHA`
    /// of a reservation of `amount` with `floor`.
    pub fn connect(
        url: &str,
        per_limit: u64,
        task: u64,
        amount: u64,
        floor: u64,
    ) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(
            "tollgate:bench:{}:{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut keys: Vec<String> = (0..4).map(|i| format!("{prefix}:limit:{i}")).collect();
        keys.push(format!("{prefix}:task"));
        for (i, k) in keys.iter().enumerate() {
            let v = if i < 4 { per_limit } else { task };
            redis::cmd("SET").arg(k).arg(v).query::<()>(&mut con)?;
        }
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query(&mut con)?;
        let mut reserve = redis::cmd("EVALSHA");
        reserve.arg(&sha).arg(keys.len());
        for k in &keys {
            reserve.arg(k);
        }
        reserve.arg(amount).arg(floor);
        Ok(Self { con, keys, reserve })
    }

    /// One check-and-decrement round trip: `Ok(0)` granted, `Ok(i)` refused by key `i`.
    pub fn reserve(&mut self) -> Result<i64, RedisError> {
        self.reserve.query(&mut self.con)
    }

    /// Current value of key `i` (0..4 limits, 4 the task budget).
    pub fn value(&mut self, i: usize) -> Result<Option<i64>, RedisError> {
        match self.keys.get(i) {
            Some(k) => redis::cmd("GET").arg(k).query(&mut self.con),
            None => Ok(None),
        }
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        // Best effort: leave no bench keys behind; a failure here changes no figure.
        let _ = redis::cmd("DEL")
            .arg(&self.keys)
            .query::<i64>(&mut self.con);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests use Redis only when `TOLLGATE_TEST_REDIS_URL` names one (the team's rule);
    /// `TOLLGATE_TEST_REQUIRE_SERVICES=1` (CI) turns a missing or unreachable one into a
    /// failure.
    fn limiter(
        test: &str,
        per_limit: u64,
        task: u64,
        amount: u64,
        floor: u64,
    ) -> Option<RedisLimiter> {
        let required = std::env::var("TOLLGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
        let Ok(url) = std::env::var(URL_VAR) else {
            assert!(!required, "{test}: {URL_VAR} is required");
            eprintln!("SKIPPED: {test}: set {URL_VAR}");
            return None;
        };
        match RedisLimiter::connect(&url, per_limit, task, amount, floor) {
            Ok(l) => Some(l),
            Err(e) => {
                assert!(!required, "{test}: Redis at {url} is required: {e}");
                eprintln!("SKIPPED: {test}: Redis at {url} is unreachable ({e}); set {URL_VAR}");
                None
            }
        }
    }

    #[test]
    fn script_debits_all_or_names_the_refusing_key() {
        let Some(mut l) = limiter(
            "script_debits_all_or_names_the_refusing_key",
            1_000,
            250,
            100,
            0,
        ) else {
            return;
        };
        assert_eq!(l.reserve().unwrap(), 0);
        assert_eq!(l.value(0).unwrap(), Some(900));
        assert_eq!(l.value(4).unwrap(), Some(150));
        assert_eq!(l.reserve().unwrap(), 0);
        // The task budget (key 5, 1-based) has 50 left: refused, nothing debited.
        assert_eq!(l.reserve().unwrap(), 5);
        assert_eq!(l.value(3).unwrap(), Some(800));
    }

    #[test]
    fn floor_protects_the_limits() {
        let Some(mut l) = limiter("floor_protects_the_limits", 1_000, 10_000, 100, 950) else {
            return;
        };
        assert_eq!(l.reserve().unwrap(), 1);
        assert_eq!(l.value(0).unwrap(), Some(1_000));
    }
}
