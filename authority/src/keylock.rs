//! Async locks by key: one lock per key, made on first use and dropped when nobody holds
//! or waits for it, so the map stays as small as the keys in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Entry = Arc<tokio::sync::Mutex<()>>;

/// A set of async locks named by string keys.
#[derive(Debug, Default)]
pub struct KeyLocks {
    map: Mutex<HashMap<String, Entry>>,
}

/// Holds the lock of one key; released on drop.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits for the lock of `key`. Locks of other keys are independent.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        // Cloned under the map's lock, so the count checked on release sees every waiter.
        let entry = self.entries().entry(key.to_string()).or_default().clone();
        let guard = entry.lock_owned().await;
        KeyGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// How many keys have a lock now (held or waited for).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when no key has a lock.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every update is a single insert or remove: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.entries();
        drop(self.guard.take());
        // Only the map's own reference left: nobody holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|e| Arc::strong_count(e) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_lock_independently_and_are_forgotten_when_free() {
        let locks = KeyLocks::default();
        let a = locks.lock("a").await;
        // Another key is free while "a" is held.
        let b = locks.lock("b").await;
        assert_eq!(locks.len(), 2);
        drop(b);
        assert_eq!(locks.len(), 1);
        // The same key is not: a second locker of "a" waits until the first is dropped.
        let mut second = Box::pin(locks.lock("a"));
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        drop(a);
        let again = second.await;
        assert_eq!(locks.len(), 1);
        drop(again);
        assert!(locks.is_empty());
    }

    /// Polls a future once: `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(move |cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
