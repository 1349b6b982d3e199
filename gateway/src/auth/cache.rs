//! A small TTL cache with single-flight loading, for review results (docs/security.md, "Caching").
//!
//! - Every entry has its own lifetime, chosen from the loaded value: allowed results live for the
//!   positive TTL, refusals for the shorter negative TTL, and values that must not be cached at all
//!   (the API server could not answer) are handed to the callers that waited for them and dropped.
//! - Concurrent lookups of a key that is not cached share one load: the first caller runs it, the
//!   others await the same cell. If the first caller is cancelled, the next waiter runs the load.
//! - The number of entries is bounded: when full, expired entries are dropped first, then arbitrary
//!   ones (a `HashMap`'s iteration order), so a flood of distinct keys cannot grow memory.
//!
//! Time is `tokio::time::Instant`, so tests drive expiry with a paused clock.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How a lookup was served (the `result` label of `namegate_auth_cache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A cached, unexpired value.
    Hit,
    /// This caller ran the load.
    Miss,
    /// Another caller's load was in flight; this one waited for it.
    Coalesced,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }
}

#[derive(Debug)]
struct Slot<V> {
    /// The value and when it expires (`None`: hand it to the waiters, do not keep it).
    cell: OnceCell<(V, Option<Instant>)>,
}

impl<V> Slot<V> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            cell: OnceCell::new(),
        })
    }

    fn is_live(&self, now: Instant) -> bool {
        match self.cell.get() {
            None => true, // loading
            Some((_, Some(expires))) => now < *expires,
            Some((_, None)) => false,
        }
    }
}

#[derive(Debug)]
pub struct Cache<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
    max_entries: usize,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub fn new(max_entries: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<Slot<V>>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot of `key`: the live one, or a fresh (empty) one put in its place.
    fn slot(&self, key: &K) -> Arc<Slot<V>> {
        let now = Instant::now();
        let mut slots = self.lock();
        if let Some(slot) = slots.get(key)
            && slot.is_live(now)
        {
            return slot.clone();
        }
        if slots.len() >= self.max_entries && !slots.contains_key(key) {
            slots.retain(|_, s| s.is_live(now));
            while slots.len() >= self.max_entries {
                let Some(victim) = slots.keys().next().cloned() else {
                    break;
                };
                slots.remove(&victim);
            }
        }
        let slot = Slot::new();
        slots.insert(key.clone(), slot.clone());
        slot
    }

    /// The cached value of `key`, or the result of `load` (shared with concurrent callers of the same
    /// key). `ttl` chooses each loaded value's lifetime; `None` means "do not cache".
    pub async fn get_or_load<F, Fut>(
        &self,
        key: &K,
        ttl: impl Fn(&V) -> Option<Duration>,
        load: F,
    ) -> (V, Lookup)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let slot = self.slot(key);
        if let Some((v, _)) = slot.cell.get() {
            return (v.clone(), Lookup::Hit);
        }
        let mut ran = false;
        let (v, expires) = slot
            .cell
            .get_or_init(|| {
                ran = true;
                async {
                    let v = load().await;
                    let expires = ttl(&v).map(|d| Instant::now() + d);
                    (v, expires)
                }
            })
            .await
            .clone();
        if ran && expires.is_none() {
            // Not to be kept: remove it unless a newer slot already replaced it.
            let mut slots = self.lock();
            if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(key);
            }
        }
        (v, if ran { Lookup::Miss } else { Lookup::Coalesced })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TTL: Duration = Duration::from_secs(30);
    const NEG: Duration = Duration::from_secs(5);

    /// Ok values live 30 s, Err values 5 s, 0 is never cached.
    fn ttl(v: &Result<u32, u32>) -> Option<Duration> {
        match v {
            Ok(0) => None,
            Ok(_) => Some(TTL),
            Err(_) => Some(NEG),
        }
    }

    async fn load(
        cache: &Cache<&'static str, Result<u32, u32>>,
        calls: &AtomicUsize,
        key: &'static str,
        v: Result<u32, u32>,
    ) -> (Result<u32, u32>, Lookup) {
        cache
            .get_or_load(&key, ttl, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                v
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn values_live_for_their_ttl() {
        let cache = Cache::new(16);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            load(&cache, &calls, "a", Ok(1)).await,
            (Ok(1), Lookup::Miss)
        );
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        // Still cached: the loader's new value is not seen.
        assert_eq!(load(&cache, &calls, "a", Ok(2)).await, (Ok(1), Lookup::Hit));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            load(&cache, &calls, "a", Ok(2)).await,
            (Ok(2), Lookup::Miss)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_cached_briefly() {
        let cache = Cache::new(16);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            load(&cache, &calls, "a", Err(7)).await,
            (Err(7), Lookup::Miss)
        );
        tokio::time::advance(NEG - Duration::from_millis(1)).await;
        assert_eq!(
            load(&cache, &calls, "a", Ok(1)).await,
            (Err(7), Lookup::Hit)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            load(&cache, &calls, "a", Ok(1)).await,
            (Ok(1), Lookup::Miss)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn uncacheable_values_are_not_kept() {
        let cache = Cache::new(16);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            load(&cache, &calls, "a", Ok(0)).await,
            (Ok(0), Lookup::Miss)
        );
        assert!(cache.is_empty());
        assert_eq!(
            load(&cache, &calls, "a", Ok(3)).await,
            (Ok(3), Lookup::Miss)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_concurrent_burst_of_one_key_costs_one_load() {
        let cache = Arc::new(Cache::<&'static str, Result<u32, u32>>::new(16));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&"burst", ttl, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // A slow review: every other task arrives while it is in flight.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok(9)
                    })
                    .await
            }));
        }
        let mut lookups = Vec::new();
        for t in tasks {
            let (v, lookup) = t.await.unwrap();
            assert_eq!(v, Ok(9));
            lookups.push(lookup);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(lookups.iter().filter(|l| **l == Lookup::Miss).count(), 1);
        assert_eq!(
            lookups.iter().filter(|l| **l == Lookup::Coalesced).count(),
            49
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncacheable_result_is_shared_with_the_waiters_of_its_burst() {
        let cache = Arc::new(Cache::<&'static str, Result<u32, u32>>::new(16));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&"down", ttl, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(0)
                    })
                    .await
                    .0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(0));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_loader_hands_over_to_the_next_caller() {
        let cache = Arc::new(Cache::<&'static str, Result<u32, u32>>::new(16));
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(&"k", ttl, || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(1)
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        first.abort();
        let _ = first.await;
        let calls = AtomicUsize::new(0);
        assert_eq!(
            load(&cache, &calls, "k", Ok(2)).await,
            (Ok(2), Lookup::Miss)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_number_of_entries_is_bounded() {
        let cache = Cache::new(4);
        let calls = AtomicUsize::new(0);
        for key in ["a", "b", "c", "d", "e", "f", "g"] {
            let _ = load(&cache, &calls, key, Ok(1)).await;
            assert!(cache.len() <= 4);
        }
        // Expired entries go first: after the TTL, new keys never evict a live one.
        tokio::time::advance(TTL).await;
        let _ = load(&cache, &calls, "h", Ok(1)).await;
        assert_eq!(cache.len(), 1);
        assert_eq!(load(&cache, &calls, "h", Ok(2)).await.1, Lookup::Hit);
    }
}
