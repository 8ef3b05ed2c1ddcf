//! The metric types this process has seen stored (a cache shared by its workers, at most
//! `MAX_TYPES` names), and the order of a metric write around it: admit the request's types
//! (no round trip when all are known; the store checks new ones), then register the new ones
//! in the type index, write, and remember the outcome.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::store::{Metric, Store, StoreError};

/// Metric types this process has seen stored, shared by its workers; at most `max` names.
pub struct KnownTypes {
    names: RwLock<HashSet<String>>,
    max: usize,
}

impl KnownTypes {
    pub fn new(max: usize) -> Arc<KnownTypes> {
        Arc::new(KnownTypes {
            names: RwLock::new(HashSet::new()),
            max,
        })
    }

    fn contains(&self, kind: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(kind)
    }

    fn insert_all<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        for kind in kinds {
            if names.len() >= self.max {
                return;
            }
            if !names.contains(kind) {
                names.insert(kind.to_string());
            }
        }
    }

    fn forget_all<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        for kind in kinds {
            names.remove(kind);
        }
    }
}

/// The types of a POST that are not known yet: `KnownTypes::admit` had the store check them
/// (their keys hold no foreign value, the index has room); the write adds them to the index
/// first.
#[derive(Debug, Default)]
pub struct Admitted {
    new: Vec<String>,
}

impl KnownTypes {
    /// Checks, before any rate-limit budget is spent, that the metric types `kinds` can be
    /// stored: for those this process does not know yet (none if all are known: no round
    /// trip), the store checks that their keys hold no foreign value (`WrongType`) and that the
    /// index has room for them (`TooManyTypes`).
    pub async fn admit(&self, store: &Store, kinds: &[&str]) -> Result<Admitted, StoreError> {
        let mut unknown: Vec<String> = kinds
            .iter()
            .filter(|k| !self.contains(k))
            .map(|k| k.to_string())
            .collect();
        if unknown.is_empty() {
            return Ok(Admitted::default());
        }
        unknown.sort_unstable();
        unknown.dedup();
        store.check_new_types(&unknown).await?;
        Ok(Admitted { new: unknown })
    }

    /// Stores one metric (its type into the index first if `admit` found it new); the
    /// series' sample count.
    pub async fn add_metric(
        &self,
        store: &Store,
        admitted: &Admitted,
        metric: &Metric,
    ) -> Result<i64, StoreError> {
        store.register_types(&admitted.new).await?;
        let r = store.add_metric(metric).await;
        self.remember(std::iter::once(metric.kind.as_str()), r)
    }

    /// Stores every metric of a batch (new types into the index first): `Ok` only if every
    /// write succeeded.
    pub async fn add_metrics(
        &self,
        store: &Store,
        admitted: &Admitted,
        metrics: &[Metric],
    ) -> Result<(), StoreError> {
        if metrics.is_empty() {
            return Ok(());
        }
        store.register_types(&admitted.new).await?;
        let r = store.add_metrics(metrics).await;
        self.remember(metrics.iter().map(|m| m.kind.as_str()), r)
    }

    /// After a write: its types are known from now on; after a `WRONGTYPE`, none of them is.
    fn remember<'a, T>(
        &self,
        kinds: impl Iterator<Item = &'a str>,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                self.insert_all(kinds);
                Ok(v)
            }
            Err(StoreError::WrongType(kind)) => {
                let kinds: Vec<&str> = kinds.collect();
                self.forget_all(kinds.iter().copied());
                let kind = kind.or_else(|| (kinds.len() == 1).then(|| kinds[0].to_string()));
                Err(StoreError::WrongType(kind))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_of_known_types_holds_at_most_max_types_names() {
        let known = KnownTypes::new(2);
        known.insert_all(["a", "b", "c", "a"]);
        assert!(known.contains("a") && known.contains("b") && !known.contains("c"));
        known.forget_all(["a"]);
        known.insert_all(["c"]);
        assert!(!known.contains("a") && known.contains("c"));
    }

    #[test]
    fn a_wrongtype_write_forgets_its_types_and_names_a_single_one() {
        let known = KnownTypes::new(10);
        known.insert_all(["cpu", "mem"]);
        let r: Result<(), _> =
            known.remember(["cpu"].into_iter(), Err(StoreError::WrongType(None)));
        assert_eq!(r, Err(StoreError::WrongType(Some("cpu".to_string()))));
        assert!(!known.contains("cpu") && known.contains("mem"));
        let r: Result<(), _> = known.remember(
            ["mem", "disk"].into_iter(),
            Err(StoreError::WrongType(None)),
        );
        assert_eq!(r, Err(StoreError::WrongType(None)));
        assert!(!known.contains("mem"));
        assert_eq!(known.remember(["disk"].into_iter(), Ok(1)), Ok(1));
        assert!(known.contains("disk"));
    }
}
