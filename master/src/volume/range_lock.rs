//! Range locks over volume blocks.
//!
//! Overlapping writes are ordered by exclusive locks over the blocks they
//! touch, so every replica (and later, parity) sees the same order; reads
//! take shared locks so they never see a block between its data and its
//! record write. The table is a short list (one entry per request in
//! flight), scanned under a mutex; waiters park on a `Notify`.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Readers share.
    Shared,
    /// One writer.
    Exclusive,
}

#[derive(Debug)]
struct Held {
    id: u64,
    start: u64,
    end: u64,
    mode: Mode,
}

/// The lock table.
#[derive(Debug, Default)]
pub struct RangeLock {
    held: Mutex<(u64, Vec<Held>)>,
    released: Notify,
}

/// A held range; released on drop.
#[derive(Debug)]
pub struct Guard<'a> {
    lock: &'a RangeLock,
    id: u64,
}

impl RangeLock {
    /// Locks blocks `start..end` in `mode`, waiting for conflicting holders.
    pub async fn lock(&self, start: u64, end: u64, mode: Mode) -> Guard<'_> {
        // Uncontended: no waiter registration on `released`.
        if let Some(id) = self.try_lock(start, end, mode) {
            return Guard { lock: self, id };
        }
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(id) = self.try_lock(start, end, mode) {
                return Guard { lock: self, id };
            }
            released.await;
        }
    }

    fn try_lock(&self, start: u64, end: u64, mode: Mode) -> Option<u64> {
        let mut g = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let conflict = g.1.iter().any(|h| {
            h.start < end && start < h.end && (mode == Mode::Exclusive || h.mode == Mode::Exclusive)
        });
        if conflict {
            return None;
        }
        g.0 += 1;
        let id = g.0;
        g.1.push(Held {
            id,
            start,
            end,
            mode,
        });
        Some(id)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut g = self.lock.held.lock().unwrap_or_else(|p| p.into_inner());
        g.1.retain(|h| h.id != self.id);
        drop(g);
        self.lock.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn readers_share_writers_exclude() {
        let l = Arc::new(RangeLock::default());
        let r1 = l.lock(0, 10, Mode::Shared).await;
        let r2 = l.lock(5, 15, Mode::Shared).await;
        assert!(l.try_lock(8, 9, Mode::Exclusive).is_none());
        assert!(l.try_lock(15, 20, Mode::Exclusive).is_some());
        drop((r1, r2));
        assert!(l.try_lock(0, 15, Mode::Exclusive).is_some());
    }

    #[tokio::test]
    async fn waiter_wakes_on_release() {
        let l = Arc::new(RangeLock::default());
        let w = l.lock(0, 4, Mode::Exclusive).await;
        let l2 = l.clone();
        let t = tokio::spawn(async move {
            let _g = l2.lock(2, 3, Mode::Exclusive).await;
        });
        tokio::task::yield_now().await;
        assert!(!t.is_finished());
        drop(w);
        assert!(t.await.is_ok());
    }
}
