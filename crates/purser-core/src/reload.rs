use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// A value that is replaced whole while readers keep using the one they loaded.
///
/// Readers call [`Reloadable::load`] once per request and keep that `Arc` until they finish, so a
/// request in flight sees one consistent version. Writers build the new value completely before
/// calling [`Reloadable::store`]: a parse error never reaches this holder.
pub struct Reloadable<T> {
    current: ArcSwap<T>,
    generation: AtomicU64,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Reloadable {
            current: ArcSwap::from_pointee(value),
            generation: AtomicU64::new(0),
        }
    }
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }
    pub fn store(&self, value: T) {
        self.current.store(Arc::new(value));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
    /// Counts the stores so far; a cache keyed on it forgets everything at each reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("current", &self.current.load())
            .field("generation", &self.generation())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_their_version_across_a_store() {
        let r = Reloadable::new(1);
        let held = r.load();
        r.store(2);
        assert_eq!(*held, 1);
        assert_eq!(*r.load(), 2);
        assert_eq!(r.generation(), 1);
    }
}
