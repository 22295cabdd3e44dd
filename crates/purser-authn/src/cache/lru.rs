//! A map with least-recently-used eviction: a hash map from key to a slot of one vector, the
//! slots linked in use order by index. Every operation is O(1); memory is one slot and one map
//! entry per item, reused after a removal, so the store never holds more than its bound.

use std::collections::HashMap;
use std::hash::Hash;

const NIL: u32 = u32::MAX;

struct Slot<K, V> {
    key: K,
    value: Option<V>,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

pub(super) struct Lru<K, V> {
    map: HashMap<K, u32>,
    slots: Vec<Slot<K, V>>,
    free: Vec<u32>,
    /// Most recently used.
    newest: u32,
    /// Least recently used: evicted first.
    oldest: u32,
    bound: usize,
}

impl<K: Copy + Eq + Hash, V> Lru<K, V> {
    /// `bound` at least 1, and below `u32::MAX`.
    pub(super) fn new(bound: usize) -> Self {
        Lru {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            bound: bound.clamp(1, (NIL - 1) as usize),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The value, without changing its place.
    pub(super) fn peek(&self, key: &K) -> Option<&V> {
        let &i = self.map.get(key)?;
        self.slots[i as usize].value.as_ref()
    }

    /// Marks the key as used now.
    pub(super) fn touch(&mut self, key: &K) {
        if let Some(&i) = self.map.get(key) {
            self.unlink(i);
            self.push_newest(i);
        }
    }

    /// Inserts or replaces, as the most recently used; evicts the least recently used beyond
    /// the bound.
    pub(super) fn insert(&mut self, key: K, value: V) {
        if let Some(&i) = self.map.get(&key) {
            self.slots[i as usize].value = Some(value);
            self.unlink(i);
            self.push_newest(i);
            return;
        }
        while self.map.len() >= self.bound {
            let oldest = self.oldest;
            if oldest == NIL {
                break;
            }
            let k = self.slots[oldest as usize].key;
            self.remove(&k);
        }
        let slot = Slot {
            key,
            value: Some(value),
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                // The bound keeps the index below NIL.
                let i = self.slots.len() as u32;
                self.slots.push(slot);
                i
            }
        };
        self.map.insert(key, i);
        self.push_newest(i);
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.map.remove(key)?;
        self.unlink(i);
        self.free.push(i);
        self.slots[i as usize].value.take()
    }

    /// The least recently used key and value.
    pub(super) fn oldest(&self) -> Option<(&K, &V)> {
        let slot = self.slots.get(self.oldest as usize)?;
        slot.value.as_ref().map(|v| (&slot.key, v))
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let s = &self.slots[i as usize];
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        let s = &mut self.slots[i as usize];
        s.newer = NIL;
        s.older = NIL;
    }

    fn push_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        {
            let s = &mut self.slots[i as usize];
            s.older = old_newest;
            s.newer = NIL;
        }
        match old_newest {
            NIL => self.oldest = i,
            n => self.slots[n as usize].newer = i,
        }
        self.newest = i;
    }

    /// Keys from the most to the least recently used (tests).
    #[cfg(test)]
    pub(super) fn keys_newest_first(&self) -> Vec<K> {
        let mut out = Vec::new();
        let mut i = self.newest;
        while i != NIL {
            out.push(self.slots[i as usize].key);
            i = self.slots[i as usize].older;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut l = Lru::new(3);
        for k in 1..=3 {
            l.insert(k, k * 10);
        }
        l.touch(&1);
        l.insert(4, 40);
        assert_eq!(l.keys_newest_first(), [4, 1, 3]);
        assert!(l.peek(&2).is_none());
        assert_eq!(l.len(), 3);
        assert_eq!(l.oldest(), Some((&3, &30)));
        l.insert(1, 11);
        assert_eq!(l.keys_newest_first(), [1, 4, 3]);
        assert_eq!(l.peek(&1), Some(&11));
    }

    #[test]
    fn removal_frees_the_slot_for_reuse() {
        let mut l = Lru::new(2);
        l.insert(1, ());
        l.insert(2, ());
        assert_eq!(l.remove(&1), Some(()));
        assert_eq!(l.remove(&1), None);
        l.insert(3, ());
        assert_eq!(l.slots.len(), 2);
        assert_eq!(l.keys_newest_first(), [3, 2]);
        l.remove(&3);
        l.remove(&2);
        assert_eq!(l.len(), 0);
        assert!(l.oldest().is_none());
        l.insert(5, ());
        assert_eq!(l.keys_newest_first(), [5]);
    }

    #[test]
    fn a_million_inserts_stay_within_the_bound() {
        let mut l = Lru::new(1000);
        for k in 0..1_000_000u32 {
            l.insert(k, k);
            if k % 3 == 0 {
                l.touch(&7); // one kept busy survives
            }
        }
        assert_eq!(l.len(), 1000);
        assert!(l.slots.len() <= 1000);
        assert!(l.peek(&999_999).is_some());
        assert!(l.peek(&7).is_some());
        assert!(l.peek(&8).is_none());
    }
}
