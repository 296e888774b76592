//! A bounded cache of open part-file handles, least recently used closed.
//!
//! A volume has one part file per chunk and part; a 1 TiB volume has
//! hundreds of thousands. Keeping each open once touched ran a process out
//! of file descriptors (`EMFILE`), so the directory backend keeps at most a
//! bounded number open and opens the others on demand.
//!
//! Invariants:
//! - Handles are shared as `Arc`s. Evicting an entry only drops the cache's
//!   reference: a read, write or sync in flight keeps its handle (and its
//!   descriptor) until it is done. The number of open descriptors is thus
//!   at most the bound plus the operations in flight.
//! - The cache only holds and orders handles; it never closes one with
//!   pending work. What an evicted handle still owes (an `fdatasync` of a
//!   dirty part) is settled by the caller, outside the cache's lock
//!   (see `part_io`).
//! - At most one entry per part: a second opener of the same part gets the
//!   handle already cached (the record-group bitmap lives in the handle, so
//!   all users must share one).
//!
//! The bound: every cache of the process shares one budget of descriptors,
//! [`default_budget`] — half the soft `RLIMIT_NOFILE`, clamped to
//! [`MIN_BUDGET`] ..= [`MAX_BUDGET`] — split evenly among the caches alive
//! (one per open volume per directory backend), each keeping at least
//! [`MIN_SHARE`]. The other half of the limit stays for sockets, meta files
//! and the handles in flight.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The least budget, whatever the limit says.
pub const MIN_BUDGET: usize = 64;
/// The largest budget, however high the limit (page cache and inodes, not
/// descriptors, are the cost beyond this).
pub const MAX_BUDGET: usize = 16_384;
/// The least share of one cache.
pub const MIN_SHARE: usize = 16;

/// Caches alive that draw on the shared budget.
static SHARED_CACHES: AtomicUsize = AtomicUsize::new(0);

/// The process-wide budget of cached part-file handles: half the soft
/// `RLIMIT_NOFILE` (read once), clamped to `MIN_BUDGET ..= MAX_BUDGET`.
pub fn default_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        budget_for(rustix::process::getrlimit(rustix::process::Resource::Nofile).current)
    })
}

/// The budget for a soft limit (`None`: unlimited).
fn budget_for(soft: Option<u64>) -> usize {
    let half = soft.map_or(MAX_BUDGET as u64, |s| s / 2);
    usize::try_from(half)
        .unwrap_or(MAX_BUDGET)
        .clamp(MIN_BUDGET, MAX_BUDGET)
}

/// How many entries a cache may hold.
#[derive(Debug)]
enum Bound {
    /// A fixed number ([`super::DirBackend::with_handle_limit`]).
    Fixed(usize),
    /// An even share of [`default_budget`] among the shared caches.
    Shared,
}

/// A bounded map from parts to shared handles, least recently used first
/// out.
#[derive(Debug)]
pub(super) struct HandleCache<K, V> {
    bound: Bound,
    inner: Mutex<Lru<K, V>>,
}

#[derive(Debug)]
struct Lru<K, V> {
    /// Entry and the tick of its last use.
    map: HashMap<K, (Arc<V>, u64)>,
    /// Last-use tick → key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Copy + Eq + Hash, V> HandleCache<K, V> {
    /// A cache drawing on the process-wide budget.
    pub(super) fn shared() -> Self {
        SHARED_CACHES.fetch_add(1, Ordering::Relaxed);
        Self::with_bound(Bound::Shared)
    }

    /// A cache of at most `cap` entries (at least one).
    pub(super) fn with_cap(cap: usize) -> Self {
        Self::with_bound(Bound::Fixed(cap.max(1)))
    }

    fn with_bound(bound: Bound) -> Self {
        HandleCache {
            bound,
            inner: Mutex::new(Lru {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
            }),
        }
    }

    /// How many entries this cache may hold now.
    pub(super) fn cap(&self) -> usize {
        match self.bound {
            Bound::Fixed(n) => n,
            Bound::Shared => {
                let caches = SHARED_CACHES.load(Ordering::Relaxed).max(1);
                (default_budget() / caches).max(MIN_SHARE)
            }
        }
    }

    /// A poisoned lock is as good as a clean one: every change below is
    /// made whole before anything can panic.
    fn lock(&self) -> MutexGuard<'_, Lru<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of `key`, marked as just used.
    pub(super) fn get(&self, key: K) -> Option<Arc<V>> {
        let mut l = self.lock();
        l.touch(key)
    }

    /// The handle of `key`, its place in the order unchanged.
    pub(super) fn peek(&self, key: K) -> Option<Arc<V>> {
        self.lock().map.get(&key).map(|(v, _)| Arc::clone(v))
    }

    /// Caches `value` for `key` unless a handle is cached already; returns
    /// the handle to use (the one cached first) and the entries evicted to
    /// stay within the bound, least recently used first, for the caller to
    /// settle and drop outside the lock.
    pub(super) fn insert(&self, key: K, value: Arc<V>) -> (Arc<V>, Vec<(K, Arc<V>)>) {
        let cap = self.cap();
        let mut l = self.lock();
        if let Some(v) = l.touch(key) {
            return (v, Vec::new());
        }
        let mut evicted = Vec::new();
        while l.map.len() >= cap {
            match l.pop_oldest() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        let t = l.next_tick();
        l.order.insert(t, key);
        l.map.insert(key, (Arc::clone(&value), t));
        (value, evicted)
    }

    /// Forgets the handle of `key` (its file was replaced).
    pub(super) fn remove(&self, key: K) -> Option<Arc<V>> {
        let mut l = self.lock();
        let (v, t) = l.map.remove(&key)?;
        l.order.remove(&t);
        Some(v)
    }

    /// Forgets every handle (the files may have changed behind us).
    pub(super) fn clear(&self) {
        let mut l = self.lock();
        l.map.clear();
        l.order.clear();
    }

    /// Number of handles cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

impl<K: Copy + Eq + Hash, V> Lru<K, V> {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn touch(&mut self, key: K) -> Option<Arc<V>> {
        let t = self.next_tick();
        let (v, old) = self.map.get_mut(&key)?;
        let v = Arc::clone(v);
        let old = std::mem::replace(old, t);
        self.order.remove(&old);
        self.order.insert(t, key);
        Some(v)
    }

    fn pop_oldest(&mut self) -> Option<(K, Arc<V>)> {
        let (_, key) = self.order.pop_first()?;
        let (v, _) = self.map.remove(&key)?;
        Some((key, v))
    }
}

impl<K, V> Drop for HandleCache<K, V> {
    fn drop(&mut self) {
        if matches!(self.bound, Bound::Shared) {
            SHARED_CACHES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(c: &HandleCache<u32, u32>, k: u32) -> Vec<u32> {
        let (_, ev) = c.insert(k, Arc::new(k * 10));
        ev.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn least_recently_used_goes_first() {
        let c = HandleCache::with_cap(3);
        for k in 0..3 {
            assert!(insert(&c, k).is_empty());
        }
        assert_eq!(c.get(0).as_deref(), Some(&0)); // 1 is now the oldest
        assert_eq!(insert(&c, 3), vec![1]);
        assert_eq!(c.peek(2).as_deref(), Some(&20)); // peek does not refresh
        assert_eq!(insert(&c, 4), vec![2]);
        assert_eq!(c.len(), 3);
        assert!(c.get(1).is_none() && c.get(2).is_none());
        assert!(c.get(0).is_some() && c.get(3).is_some() && c.get(4).is_some());
    }

    #[test]
    fn a_second_insert_shares_the_first_handle() {
        let c = HandleCache::with_cap(2);
        let first = Arc::new(7u32);
        c.insert(1, Arc::clone(&first));
        let (got, ev) = c.insert(1, Arc::new(8));
        assert!(Arc::ptr_eq(&got, &first) && ev.is_empty());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_handle_in_use_survives_eviction() {
        let c = HandleCache::with_cap(1);
        let (in_use, _) = c.insert(1u32, Arc::new(String::from("part 1")));
        let (_, evicted) = c.insert(2, Arc::new(String::from("part 2")));
        assert_eq!(evicted.len(), 1);
        drop(evicted); // the cache's reference is gone...
        assert_eq!(in_use.as_str(), "part 1"); // ...the user's is not
        assert_eq!(Arc::strong_count(&in_use), 1);
        assert!(c.get(1).is_none());
    }

    #[test]
    fn remove_and_clear_forget_entries() {
        let c = HandleCache::with_cap(4);
        (0..4).for_each(|k| drop(insert(&c, k)));
        assert_eq!(c.remove(2).as_deref(), Some(&20));
        assert!(c.remove(2).is_none());
        assert!(insert(&c, 9).is_empty()); // room again
        c.clear();
        assert_eq!(c.len(), 0);
        assert!(insert(&c, 1).is_empty());
    }

    #[test]
    fn budget_follows_the_soft_limit() {
        assert_eq!(budget_for(Some(1024)), 512);
        assert_eq!(budget_for(Some(20)), MIN_BUDGET);
        assert_eq!(budget_for(Some(1 << 40)), MAX_BUDGET);
        assert_eq!(budget_for(None), MAX_BUDGET);
    }

    #[test]
    fn shared_caches_split_the_budget() {
        let a = HandleCache::<u32, u32>::shared();
        let b = HandleCache::<u32, u32>::shared();
        // Other tests' caches come and go; these two are alive throughout.
        let most = (default_budget() / 2).max(MIN_SHARE);
        assert!((MIN_SHARE..=most).contains(&a.cap()));
        assert!((MIN_SHARE..=most).contains(&b.cap()));
    }
}
