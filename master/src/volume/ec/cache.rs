//! Reconstructed data parts in memory: a small LRU keyed by (chunk, part).
//!
//! An entry is one data part of one chunk, every row: the bytes and, per
//! row, the generation the block carries (`None`: the row could not be
//! restored, its block fails with EIO). It is built under a shared lock
//! over the whole chunk (one consistent snapshot) and dropped by every
//! write to the chunk, so a hit is always the chunk's current content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qbd_core::generation::Generation;

/// One data part of one chunk, reconstructed.
#[derive(Debug)]
pub struct CachedPart {
    /// `rows × block_size` bytes.
    pub data: Vec<u8>,
    /// Per row: the block's generation, `None` if it could not be restored.
    pub gens: Vec<Option<Generation>>,
}

#[derive(Debug, Default)]
struct Inner {
    used: usize,
    tick: u64,
    map: HashMap<(u64, usize), (u64, Arc<CachedPart>)>,
}

/// The LRU.
#[derive(Debug)]
pub struct PartCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl PartCache {
    /// A cache holding at most `capacity` bytes of part data.
    pub fn new(capacity: usize) -> Self {
        PartCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `(chunk, part)`, marked recently used.
    pub fn get(&self, chunk: u64, part: usize) -> Option<Arc<CachedPart>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let e = g.map.get_mut(&(chunk, part))?;
        e.0 = tick;
        Some(e.1.clone())
    }

    /// Inserts an entry, evicting the least recently used ones.
    pub fn insert(&self, chunk: u64, part: usize, entry: Arc<CachedPart>) {
        let size = entry.data.len();
        if size > self.capacity {
            return;
        }
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some((_, old)) = g.map.insert((chunk, part), (tick, entry)) {
            g.used -= old.data.len();
        }
        g.used += size;
        while g.used > self.capacity {
            let Some(victim) = g.map.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k) else {
                break;
            };
            if let Some((_, old)) = g.map.remove(&victim) {
                g.used -= old.data.len();
            }
        }
    }

    /// Drops every entry of `chunk` (it was written).
    pub fn invalidate(&self, chunk: u64) {
        let mut g = self.lock();
        if g.map.is_empty() {
            return;
        }
        let keys: Vec<(u64, usize)> = g.map.keys().filter(|k| k.0 == chunk).copied().collect();
        for k in keys {
            if let Some((_, old)) = g.map.remove(&k) {
                g.used -= old.data.len();
            }
        }
    }

    /// Number of entries (tests, logs).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: usize) -> Arc<CachedPart> {
        Arc::new(CachedPart {
            data: vec![0; n],
            gens: vec![None; 1],
        })
    }

    #[test]
    fn evicts_least_recently_used_and_invalidates_by_chunk() {
        let c = PartCache::new(300);
        c.insert(1, 0, part(100));
        c.insert(2, 0, part(100));
        c.insert(3, 1, part(100));
        assert!(c.get(1, 0).is_some());
        c.insert(4, 0, part(100)); // evicts (2, 0)
        assert!(c.get(2, 0).is_none());
        assert!(c.get(1, 0).is_some() && c.get(3, 1).is_some());
        c.invalidate(1);
        assert!(c.get(1, 0).is_none());
        assert_eq!(c.len(), 2);
        c.insert(9, 0, part(400)); // larger than the cache: not kept
        assert_eq!(c.len(), 2);
    }
}
