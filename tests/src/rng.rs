//! The one seeded generator of the suites: xorshift64* (small, no dependency, good enough to
//! spread keys and build hostile input). A test replays the same sequence from the same seed;
//! if it panics while a generator is alive, the generator prints its seed (and the variable
//! that replays it, for one made with [`Rng::from_env`]).

/// A seeded xorshift64* generator.
pub struct Rng {
    state: u64,
    seed: u64,
    replay: Option<&'static str>,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed.max(1),
            seed,
            replay: None,
        }
    }

    /// Seeded from `$var` when it is set (a number), else from `default`; the seed is printed
    /// now and again if the test fails, with the variable that replays the run.
    pub fn from_env(var: &'static str, default: u64) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("seed {seed} ({var}={seed} replays this run)");
        Rng {
            replay: Some(var),
            ..Rng::new(seed)
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent generator for the `k`-th of several tasks, seeded from this one's seed.
    pub fn derive(&self, k: u64) -> Rng {
        Rng::new(self.seed ^ (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.below_u64(n as u64) as usize
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below_u64(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One of `items`.
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        if std::thread::panicking() {
            match self.replay {
                Some(var) => eprintln!(
                    "generator seed {} ({var}={} replays this run)",
                    self.seed, self.seed
                ),
                None => eprintln!("generator seed {}", self.seed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_values_stay_in_range() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
        let mut r = Rng::new(0);
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
        // Every value of a small range comes up.
        let mut seen = [false; 5];
        for _ in 0..200 {
            seen[r.below(5)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
