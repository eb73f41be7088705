//! A process-wide cache of reconstructed pages.
//!
//! A page rebuilt by WAL redo depends only on the timeline's versions of its
//! key up to the newest one used, so it is cached under (timeline
//! incarnation, key, LSN of that newest version) and serves every later read
//! of the key until a newer version arrives. The incarnation
//! ([`new_incarnation`]) is unique to one `Timeline` object in this process,
//! so a timeline deleted and created again with the same id never sees the
//! old one's pages. Capacity is `page_cache_size` pages
//! ([`init`], default 8192); eviction is second-chance (clock) over insertion
//! order, so recently hit pages survive a sweep.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use zenith_utils::lsn::Lsn;

use crate::key::Key;

/// (timeline incarnation, key, LSN of the newest version used).
pub type CacheKey = (u64, Key, Lsn);

/// A number no other timeline object of this process has.
pub fn new_incarnation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Inner {
    capacity: usize,
    map: HashMap<CacheKey, (Bytes, bool)>,
    order: VecDeque<CacheKey>,
    hits: u64,
    misses: u64,
}

/// The cache (see the module documentation).
pub struct PageCache {
    inner: Mutex<Inner>,
}

static CACHE: OnceLock<PageCache> = OnceLock::new();

/// Set the capacity (in pages) before first use; later calls have no effect.
pub fn init(capacity: usize) {
    let _ = CACHE.set(PageCache::new(capacity));
}

/// The process-wide cache.
pub fn get() -> &'static PageCache {
    CACHE.get_or_init(|| PageCache::new(8192))
}

impl PageCache {
    pub fn new(capacity: usize) -> PageCache {
        PageCache {
            inner: Mutex::new(Inner {
                capacity: capacity.max(1),
                map: HashMap::new(),
                order: VecDeque::new(),
                hits: 0,
                misses: 0,
            }),
        }
    }

    pub fn lookup(&self, key: &CacheKey) -> Option<Bytes> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.map.get_mut(key) {
            Some((page, referenced)) => {
                *referenced = true;
                let p = page.clone();
                g.hits += 1;
                Some(p)
            }
            None => {
                g.misses += 1;
                None
            }
        }
    }

    pub fn insert(&self, key: CacheKey, page: Bytes) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.map.contains_key(&key) {
            return;
        }
        while g.map.len() >= g.capacity {
            let Some(victim) = g.order.pop_front() else {
                break;
            };
            match g.map.get_mut(&victim) {
                Some((_, referenced)) if *referenced => {
                    *referenced = false;
                    g.order.push_back(victim);
                }
                Some(_) => {
                    g.map.remove(&victim);
                }
                None => {}
            }
        }
        g.map.insert(key, (page, false));
        g.order.push_back(key);
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.hits, g.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_unreferenced_first_and_keeps_capacity() {
        let c = PageCache::new(2);
        let tl = new_incarnation();
        let k = |n: u32| (tl, Key::MIN.add(n), Lsn(1));
        c.insert(k(1), Bytes::from_static(b"1"));
        c.insert(k(2), Bytes::from_static(b"2"));
        assert!(c.lookup(&k(1)).is_some()); // referenced: survives the next sweep
        c.insert(k(3), Bytes::from_static(b"3"));
        assert!(c.lookup(&k(1)).is_some());
        assert!(c.lookup(&k(2)).is_none());
        assert!(c.lookup(&k(3)).is_some());
        assert_eq!(c.stats(), (3, 1));
    }
}
