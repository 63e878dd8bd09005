//! A per-thread front for the open-file cache.
//!
//! Why: on a cached file's request, the moka lookup (hashing the key, recording the read, the
//! housekeeping those records trigger) took more of the server's user time than anything else
//! in the lookup (about 7 % under random 4 KiB ranges). Each thread keeps the entries it served
//! recently in a small direct-mapped table and asks moka again at most once a second per entry,
//! which keeps moka's idle timer and recency for the entry as they were.
//!
//! What the table may not change:
//! - It holds weak references only. An entry moka evicts closes its descriptor (and frees its
//!   in-memory copy) exactly as before, once no response streams from it; a table never keeps
//!   a replaced file's disk space in use.
//! - An invalidation (a file found changed, an admin replace or evict) bumps the store's
//!   generation, which retires every table entry of that store on every thread at once.
//! - A hit is still checked against the path's current identity by the caller (`stat`), like a
//!   moka hit.

use std::cell::RefCell;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::metadata::FileMeta;
use super::snapshot::Snapshot;
use super::OpenAsset;

/// Entries per thread (direct-mapped by a hash of the path).
const SLOTS: usize = 64;
/// How long a table entry is used before the thread asks moka again.
const FRESH_MS: u64 = 1_000;

/// One store's view of the per-thread tables.
pub struct Front {
    /// Tells this store's entries from other stores' in the shared tables (tests and embedders
    /// may run several stores in one process).
    id: u64,
    generation: AtomicU64,
}

struct Slot {
    store: u64,
    generation: u64,
    fresh_until: u64,
    path: String,
    file: Weak<File>,
    meta: Weak<FileMeta>,
    copy: Option<Weak<Snapshot>>,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// FNV-1a: a path is short and this runs once per request.
fn slot_of(path: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % SLOTS
}

impl Default for Front {
    fn default() -> Self {
        Self::new()
    }
}

impl Front {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Front {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }
    }

    /// The generation to hand to [`Front::put`]: read *before* the moka lookup whose result is
    /// put, so a retirement between the two retires that result too.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Retires every entry of this store on every thread. Call it *after* the moka entry is
    /// invalidated, so no thread can put the old value back under the new generation.
    pub fn retire_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// This thread's entry for `path`, when it is of the current generation, fresh, and still
    /// alive (held by moka or a response).
    pub fn get(&self, path: &str, now_ms: u64) -> Option<OpenAsset> {
        let generation = self.generation();
        TABLE.with_borrow(|table| {
            let slot = table.get(slot_of(path))?.as_ref()?;
            if slot.store != self.id
                || slot.generation != generation
                || now_ms > slot.fresh_until
                || slot.path != path
            {
                return None;
            }
            let copy = match &slot.copy {
                Some(weak) => Some(weak.upgrade()?),
                None => None,
            };
            Some(OpenAsset {
                file: slot.file.upgrade()?,
                meta: slot.meta.upgrade()?,
                copy,
            })
        })
    }

    /// Keeps `asset` (just looked up in moka under `generation`) for this thread.
    pub fn put(&self, path: &str, asset: &OpenAsset, generation: u64, now_ms: u64) {
        TABLE.with_borrow_mut(|table| {
            if table.is_empty() {
                table.resize_with(SLOTS, || None);
            }
            let fresh_until = now_ms + FRESH_MS;
            let entry = &mut table[slot_of(path)];
            // The path's buffer is reused when the slot had one: no allocation per refresh.
            let mut kept = entry.take().map(|s| s.path).unwrap_or_default();
            kept.clear();
            kept.push_str(path);
            *entry = Some(Slot {
                store: self.id,
                generation,
                fresh_until,
                path: kept,
                file: Arc::downgrade(&asset.file),
                meta: Arc::downgrade(&asset.meta),
                copy: asset.copy.as_ref().map(Arc::downgrade),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::metadata::FileIdentity;

    fn asset(dir: &std::path::Path, name: &str) -> OpenAsset {
        std::fs::write(dir.join(name), b"bytes").unwrap();
        let file = Arc::new(File::open(dir.join(name)).unwrap());
        let identity = FileIdentity::of(&file.metadata().unwrap());
        OpenAsset {
            file,
            meta: Arc::new(FileMeta::new(identity, None, None, "video/mp4")),
            copy: None,
        }
    }

    #[test]
    fn a_put_entry_is_found_until_stale_retired_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = asset(dir.path(), "a.mp4");
        let front = Front::new();
        let g = front.generation();
        front.put("a.mp4", &a, g, 1_000);
        let hit = front.get("a.mp4", 1_500).expect("fresh entry");
        assert!(Arc::ptr_eq(&hit.file, &a.file) && Arc::ptr_eq(&hit.meta, &a.meta));
        drop(hit);
        assert!(front.get("b.mp4", 1_500).is_none(), "another path");
        assert!(front.get("a.mp4", 2_001).is_none(), "older than a second");

        // Another store never sees this store's entries.
        assert!(Front::new().get("a.mp4", 1_500).is_none());

        // A retirement hides entries put before it, and those put under the old generation.
        front.retire_all();
        assert!(front.get("a.mp4", 1_500).is_none());
        front.put("a.mp4", &a, g, 1_000);
        assert!(front.get("a.mp4", 1_500).is_none());
        front.put("a.mp4", &a, front.generation(), 1_000);
        assert!(front.get("a.mp4", 1_500).is_some());

        // Weak only: once the cache (and every response) let go, the descriptor is closed and
        // the entry gives nothing.
        let file = Arc::downgrade(&a.file);
        drop(a);
        assert!(
            file.upgrade().is_none(),
            "the table kept the descriptor open"
        );
        assert!(front.get("a.mp4", 1_500).is_none());
    }

    #[test]
    fn paths_spread_over_the_slots() {
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| slot_of(&format!("videos/{i}/seg_00042.ts")))
            .collect();
        assert!(used.len() > SLOTS / 2, "{} slots used", used.len());
    }
}
