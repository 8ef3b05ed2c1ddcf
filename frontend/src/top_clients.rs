//! The most-denied clients of one API instance in bounded memory: Space-Saving (Metwally,
//! Agrawal, El Abbadi, 2005) over `CAPACITY` entries, whatever the number of distinct clients.
//!
//! Every denial is counted on its client's entry: a client that has none takes the entry with
//! the smallest count (its count `m` becomes `m + 1`, and `m` is recorded as that entry's
//! `error`). So an entry's `count - error` is exactly the denials of its client since it got the
//! entry, and that is what is flushed (as deltas since the last flush). Hence:
//!
//! - a reported count is never more than the client's true count (no false inflation);
//! - it is exact for every client that kept its entry since its first denial in the period
//!   (in particular whenever at most `CAPACITY` distinct clients were denied in the period);
//! - an entry is only ever taken from the client with the smallest count, which is at most
//!   `N / CAPACITY` after `N` denials: a client that stays above that threshold keeps its entry,
//!   and one whose denials since the period began exceed `N / CAPACITY` is monitored at its end.
//!
//! The period is reset by the caller (`crate::decisions`, once per minute bucket), so the table
//! is about one minute's denials.

use std::collections::{BTreeSet, HashMap};

/// Entries per instance. Memory: about `CAPACITY` x (client name + 80 bytes).
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
struct Entry {
    client: Box<str>,
    count: u64,
    error: u64,
    /// `count - error` when last flushed.
    flushed: u64,
}

impl Entry {
    fn guaranteed(&self) -> u64 {
        self.count - self.error
    }
}

/// Space-Saving with `capacity` entries (see the module doc).
#[derive(Debug)]
pub struct SpaceSaving {
    capacity: usize,
    entries: Vec<Entry>,
    by_client: HashMap<Box<str>, usize>,
    /// `(count, entry index)` of every entry: the first is the one to take.
    order: BTreeSet<(u64, usize)>,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        assert!(capacity > 0, "a Space-Saving table needs an entry");
        SpaceSaving {
            capacity,
            entries: Vec::new(),
            by_client: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Entries in use (at most the capacity).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One denial of `client`.
    pub fn add(&mut self, client: &str) {
        if let Some(&i) = self.by_client.get(client) {
            let e = &mut self.entries[i];
            self.order.remove(&(e.count, i));
            e.count += 1;
            self.order.insert((e.count, i));
            return;
        }
        let name: Box<str> = client.into();
        if self.entries.len() < self.capacity {
            let i = self.entries.len();
            self.entries.push(Entry {
                client: name.clone(),
                count: 1,
                error: 0,
                flushed: 0,
            });
            self.by_client.insert(name, i);
            self.order.insert((1, i));
            return;
        }
        let Some((min, i)) = self.order.pop_first() else {
            return;
        };
        let e = &mut self.entries[i];
        self.by_client.remove(&e.client);
        *e = Entry {
            client: name.clone(),
            count: min + 1,
            error: min,
            flushed: 0,
        };
        self.by_client.insert(name, i);
        self.order.insert((min + 1, i));
    }

    /// The denials counted since the last call, per client (`count - error` minus what was
    /// already taken), marked as taken. Give them back with [`SpaceSaving::untake`] if they
    /// could not be stored.
    pub fn take_deltas(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            let delta = e.guaranteed() - e.flushed;
            if delta > 0 {
                e.flushed = e.guaranteed();
                out.push((e.client.to_string(), delta));
            }
        }
        out
    }

    /// Undoes `take_deltas` for the clients that still hold their entry.
    pub fn untake(&mut self, deltas: &[(String, u64)]) {
        for (client, delta) in deltas {
            if let Some(&i) = self.by_client.get(client.as_str()) {
                let e = &mut self.entries[i];
                e.flushed = e.flushed.saturating_sub(*delta);
            }
        }
    }

    /// `(client, count - error)` of every entry, largest first (ties by name).
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .entries
            .iter()
            .map(|e| (e.client.to_string(), e.guaranteed()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Empties the table (a new period).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_client.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn count(t: &SpaceSaving, client: &str) -> Option<u64> {
        t.top().into_iter().find(|(c, _)| c == client).map(|x| x.1)
    }

    #[test]
    fn within_capacity_every_count_is_exact() {
        let mut t = SpaceSaving::new(4);
        for c in ["a", "b", "a", "c", "a", "b", "d"] {
            t.add(c);
        }
        assert_eq!(
            t.top(),
            vec![
                ("a".to_string(), 3),
                ("b".to_string(), 2),
                ("c".to_string(), 1),
                ("d".to_string(), 1)
            ]
        );
    }

    #[test]
    fn memory_is_bounded_and_a_heavy_client_stays_exact_among_many() {
        let mut t = SpaceSaving::new(64);
        let mut truth: HashMap<String, u64> = HashMap::new();
        // A heavy client among 10,000 distinct ones, interleaved.
        for i in 0..10_000u32 {
            let c = format!("10.0.{}.{}", i / 256, i % 256);
            t.add(&c);
            *truth.entry(c).or_default() += 1;
            if i % 10 == 0 {
                t.add("203.0.113.7");
                *truth.entry("203.0.113.7".to_string()).or_default() += 1;
            }
        }
        assert_eq!(t.len(), 64);
        assert_eq!(t.by_client.len(), 64);
        assert_eq!(t.order.len(), 64);
        assert_eq!(t.top()[0], ("203.0.113.7".to_string(), 1000));
        // No reported count exceeds the truth.
        for (c, n) in t.top() {
            assert!(n <= truth[&c], "{c}: {n} > {}", truth[&c]);
        }
    }

    #[test]
    fn the_threshold_holds_against_a_brute_force_model() {
        // Pseudo-random skewed streams: every client with more than N/capacity denials is in
        // the table, and no count is over the truth.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for capacity in [1usize, 2, 8, 32] {
            let mut t = SpaceSaving::new(capacity);
            let mut truth: HashMap<String, u64> = HashMap::new();
            let n = 5_000u64;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let r = seed % 1000;
                // Zipf-ish: small ids are frequent.
                let id = (r * r) / 10_000;
                let c = format!("c{id}");
                t.add(&c);
                *truth.entry(c).or_default() += 1;
            }
            let top = t.top();
            let min_count = t.order.first().map_or(0, |x| x.0);
            assert!(min_count <= n / capacity as u64, "{capacity}: {min_count}");
            for (c, &k) in &truth {
                if k > n / capacity as u64 {
                    assert!(top.iter().any(|(x, _)| x == c), "{capacity}: {c} ({k})");
                }
            }
            for (c, k) in top {
                assert!(k <= truth[&c]);
            }
        }
    }

    #[test]
    fn deltas_are_taken_once_and_given_back_on_failure() {
        let mut t = SpaceSaving::new(2);
        t.add("a");
        t.add("a");
        t.add("b");
        let d = t.take_deltas();
        assert_eq!(d, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
        assert!(t.take_deltas().is_empty());
        t.add("a");
        let d = t.take_deltas();
        assert_eq!(d, vec![("a".to_string(), 1)]);
        t.untake(&d);
        assert_eq!(t.take_deltas(), vec![("a".to_string(), 1)]);
        // "c" takes b's entry (the smallest): c's delta is its own one denial.
        t.add("c");
        assert_eq!(t.take_deltas(), vec![("c".to_string(), 1)]);
        assert_eq!(count(&t, "b"), None);
        t.clear();
        assert!(t.is_empty());
    }
}
