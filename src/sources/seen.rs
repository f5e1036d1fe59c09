//! A bounded set of recently seen ids, forgetting the oldest first: how the
//! collectors drop repeats (Reddit's overlapping polls, Jetstream's replayed
//! overlap) with bounded memory.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` distinct ids inserted.
#[derive(Debug)]
pub struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl Seen {
    /// An empty set keeping at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Seen {
        Seen {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `id` is among the remembered ids.
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Remembers `id`; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// The `n` most recently inserted ids, oldest first (for a checkpoint).
    pub fn newest(&self, n: usize) -> Vec<String> {
        self.order
            .iter()
            .skip(self.order.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn the_seen_set_is_bounded() {
        let mut seen = Seen::new(3);
        for name in ["a", "b", "c", "d"] {
            assert!(seen.insert(name));
        }
        assert!(!seen.insert("d"));
        assert!(!seen.contains("a") && seen.contains("d"));
        assert_eq!(seen.newest(2), ["c", "d"]);
    }
}
