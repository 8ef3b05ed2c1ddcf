//! API keys (SPEC section 8): made at random (256 bits), shown once, stored only as SHA-256
//! digests (`tally:apikey:<hex>`, see `store::keys`); their id is the digest's first 16 hex
//! digits. A request carries its key as `Authorization: Bearer KEY` or `X-API-Key: KEY`.
//!
//! Every instance looks a key up in Redis at most once a second (`CACHE_TTL`), known or
//! unknown, so a revoked key is refused everywhere within that second and a flood of made-up
//! keys costs one lookup per key per second, in a cache of bounded size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{KeyRecord, Store, StoreError};

/// How long a lookup is believed.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Most cached lookups; past it the cache starts afresh.
const CACHE_MAX: usize = 100_000;
/// Longest key read from a request (a longer one is unknown without a lookup).
pub const MAX_KEY_LEN: usize = 256;
/// Every key starts with this (so a leaked one is recognisable).
pub const KEY_PREFIX: &str = "tally_";
/// Hex digits of the digest that make a key's id.
pub const ID_LEN: usize = 16;

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The SHA-256 digest of `key`, in hex: what Redis stores.
pub fn digest_hex(key: &str) -> String {
    hex(digest(&SHA256, key.as_bytes()).as_ref())
}

/// A key's id: the digest's first `ID_LEN` hex digits.
pub fn id_of(digest_hex: &str) -> String {
    digest_hex[..ID_LEN.min(digest_hex.len())].to_string()
}

/// A new key: `tally_` and 64 hex digits (256 random bits).
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no secure randomness available".to_string())?;
    Ok(format!("{KEY_PREFIX}{}", hex(&bytes)))
}

/// The key a request carries: `Authorization: Bearer KEY` (the scheme in any case), else
/// `X-API-Key: KEY`. `Some("")` for a present but empty one (refused like an unknown key);
/// another `Authorization` scheme is not an API key.
pub fn presented<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(auth) = authorization {
        let auth = auth.trim();
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim());
        }
    }
    x_api_key.map(str::trim)
}

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    /// The key's name (`keys create --name`), empty when it has none.
    pub name: String,
    pub tier: String,
}

/// One lookup: when, and the caller (`None`: unknown or revoked).
type Lookup = (Instant, Option<Arc<Caller>>);

/// The per-process cache of lookups, by digest.
#[derive(Default)]
pub struct KeyCache {
    map: Mutex<HashMap<String, Lookup>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

impl KeyCache {
    pub fn new() -> Arc<KeyCache> {
        Arc::new(KeyCache::default())
    }

    /// The caller of `key`, `None` if it is unknown or revoked (within `CACHE_TTL`).
    pub async fn resolve(
        &self,
        store: &Store,
        key: &str,
    ) -> Result<Option<Arc<Caller>>, StoreError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let digest = digest_hex(key);
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let caller = store.api_key(&digest).await?.map(|r: KeyRecord| {
            Arc::new(Caller {
                id: r.id,
                name: r.name,
                tier: r.tier,
            })
        });
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(digest, (Instant::now(), caller.clone()));
        Ok(caller)
    }

    fn cached(&self, digest: &str) -> Option<Option<Arc<Caller>>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(digest)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, c)| c.clone())
    }
}

/// `keys create`: a new key of `tier` named `name`; returns the key (shown once) and its id.
pub async fn create(store: &Store, tier: &str, name: &str) -> Result<(String, String), String> {
    let key = generate()?;
    let digest = digest_hex(&key);
    let id = id_of(&digest);
    let record = KeyRecord {
        id: id.clone(),
        name: name.to_string(),
        tier: tier.to_string(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    store
        .create_api_key(&digest, &record)
        .await
        .map_err(|e| format!("could not store the key: {e}"))?;
    Ok((key, id))
}

/// `keys list`: every key's record.
pub async fn list(store: &Store) -> Result<Vec<KeyRecord>, String> {
    let keys = store
        .api_keys()
        .await
        .map_err(|e| format!("could not read the keys: {e}"))?;
    Ok(keys.into_iter().map(|(_, r)| r).collect())
}

/// `keys revoke ID_OR_NAME`: revokes the one key whose id or name it is; the revoked id.
pub async fn revoke(store: &Store, id_or_name: &str) -> Result<String, String> {
    let keys = store
        .api_keys()
        .await
        .map_err(|e| format!("could not read the keys: {e}"))?;
    let matching: Vec<&(String, KeyRecord)> = keys
        .iter()
        .filter(|(_, r)| r.id == id_or_name || (!r.name.is_empty() && r.name == id_or_name))
        .collect();
    match matching.as_slice() {
        [] => Err(format!("no key has the id or name {id_or_name:?}")),
        [(digest, record)] => {
            store
                .revoke_api_key(digest, &record.id)
                .await
                .map_err(|e| format!("could not revoke the key: {e}"))?;
            Ok(record.id.clone())
        }
        _ => Err(format!(
            "{} keys are named {id_or_name:?}: revoke one by its id",
            matching.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_256_random_bits_and_their_id_is_a_prefix_of_their_digest() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(
            a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64,
            "{a}"
        );
        let d = digest_hex("abc");
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id_of(&d), "ba7816bf8f01cfea");
    }

    #[test]
    fn a_key_comes_as_a_bearer_token_or_in_x_api_key() {
        let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (Some("Bearer k1"), None, Some("k1")),
            (Some("bearer   k1 "), None, Some("k1")),
            (Some("BEARER k1"), Some("k2"), Some("k1")),
            (None, Some(" k2"), Some("k2")),
            (Some("Basic dXNlcjpwYXNz"), Some("k2"), Some("k2")),
            (Some("Basic dXNlcjpwYXNz"), None, None),
            (Some("Bearer"), None, Some("")),
            (None, Some(""), Some("")),
            (None, None, None),
        ];
        for (auth, x, want) in cases {
            assert_eq!(presented(*auth, *x), *want, "{auth:?} {x:?}");
        }
    }
}
