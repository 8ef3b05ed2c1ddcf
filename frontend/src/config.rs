//! Configuration from the environment (SPEC §3). Every variable has a default; an empty value
//! counts as unset (what `docker compose` passes for `VAR=`). A bad value is an error that names
//! the variable, and start-up stops on it.

use std::fmt;
use std::time::Duration;

pub mod policy_file;
mod proxies;

pub use policy_file::PolicyFile;
pub use proxies::{canonical, TrustedProxies};

/// Everything the API reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `REDIS_URL`: one `redis://host:port` URL, or with `redis_cluster` a comma-separated list
    /// of seed nodes.
    pub redis_urls: Vec<String>,
    /// `REDIS_CLUSTER`: use redis-rs's cluster client.
    pub redis_cluster: bool,
    /// `REDIS_CA_FILE`: the CA certificates (PEM) a `rediss://` server's certificate is
    /// verified against; `None` = the system roots.
    pub redis_ca: Option<CaFile>,
    /// `REDIS_TIMEOUT_MS`: connect and response timeout of one Redis call (WAIT time comes on
    /// top of it). Not in SPEC §3: an addition, default 1000.
    pub redis_timeout: Duration,
    /// `REDIS_WAIT_REPLICAS`: 0 = off; n >= 1 = writes are acknowledged after `WAIT n`.
    pub redis_wait_replicas: u32,
    /// `REDIS_WAIT_TIMEOUT_MS`.
    pub redis_wait_timeout_ms: u64,
    /// `HOST`.
    pub host: String,
    /// `PORT`.
    pub port: u16,
    /// `RATE_LIMIT`: requests per window per client.
    pub rate_limit: u64,
    /// `RATE_WINDOW`: window length in seconds.
    pub rate_window_s: u64,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// `CB_FAILURE_THRESHOLD`: consecutive failures that open the breaker.
    pub cb_failure_threshold: u32,
    /// `CB_RESET_TIMEOUT`: seconds (fractions allowed) the breaker stays open.
    pub cb_reset_timeout: Duration,
    /// `EXTERNAL_SERVICE_URL`: a real upstream; `None` = the simulator.
    pub external_service_url: Option<String>,
    /// `EXTERNAL_SERVICE_FAILURE_RATE`: the simulator's failure probability, 0..=1.
    pub external_service_failure_rate: f64,
    /// `EXTERNAL_SERVICE_TIMEOUT_MS`: timeout of one upstream call.
    pub external_service_timeout: Duration,
    /// `BATCH_MAX`: most items in one batch (SPEC §5).
    pub batch_max: usize,
    /// `MAX_TYPES`: most distinct metric types (SPEC §11); a new type beyond it is refused.
    pub max_types: usize,
    /// `MAX_SERIES_PER_TYPE`: most tag sets of one metric type (SPEC §9); samples of a new
    /// tag set beyond it go to the type's overflow series.
    pub max_series_per_type: usize,
    /// `WORKERS`: actix worker threads, each with its own Redis connections; `None` = one per
    /// CPU (actix's default). Not in SPEC §3: an addition.
    pub workers: Option<usize>,
    /// `POLICY_FILE` (SPEC §8): named policies and tiers, read and validated at start-up;
    /// `None` = one policy `default` (`RATE_LIMIT` per `RATE_WINDOW`) on ingest, per client IP.
    pub policy_file: Option<PolicyFile>,
}

impl Default for Config {
    /// The documented defaults (what an empty environment gives).
    fn default() -> Self {
        Config {
            redis_urls: vec!["redis://127.0.0.1:6379".to_string()],
            redis_cluster: false,
            redis_ca: None,
            redis_timeout: Duration::from_millis(1000),
            redis_wait_replicas: 0,
            redis_wait_timeout_ms: 100,
            host: "0.0.0.0".to_string(),
            port: 8000,
            rate_limit: 5,
            rate_window_s: 60,
            trusted_proxies: TrustedProxies::default(),
            cb_failure_threshold: 3,
            cb_reset_timeout: Duration::from_secs(10),
            external_service_url: None,
            external_service_failure_rate: 0.2,
            external_service_timeout: Duration::from_millis(1000),
            batch_max: 1000,
            max_types: 10_000,
            max_series_per_type: 1000,
            workers: None,
            policy_file: None,
        }
    }
}

/// The CA file of `REDIS_CA_FILE`, read (and checked to hold PEM certificates) at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    /// The path, as given.
    pub path: String,
    /// The file's contents: one or more PEM certificates.
    pub pem: Vec<u8>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFile({:?}, {} bytes)", self.path, self.pem.len())
    }
}

/// A variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn bad(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// Upper bound of `MAX_TYPES` (the index and the in-memory cache of known types hold at most
/// this many names).
const MAX_MAX_TYPES: u64 = 10_000_000;

/// Longest window the module accepts is far beyond this; a day keeps `window * 1000` sane.
const MAX_RATE_WINDOW_S: u64 = 7 * 24 * 3600;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let d = Config::default();
        let redis_cluster = match var("REDIS_CLUSTER") {
            Some(v) => parse_bool("REDIS_CLUSTER", &v)?,
            None => d.redis_cluster,
        };
        let redis_urls = match var("REDIS_URL") {
            Some(v) => parse_redis_urls(&v, redis_cluster)?,
            None => d.redis_urls,
        };
        let redis_ca = var("REDIS_CA_FILE")
            .map(|path| read_ca_file(path.trim()))
            .transpose()?;
        if redis_ca.is_some() && !redis_urls.iter().all(|u| tls_scheme(u)) {
            return Err(bad(
                "REDIS_CA_FILE",
                "is set but REDIS_URL is not a rediss:// URL (the CA would not be used)",
            ));
        }
        let trusted_proxies = match var("TRUSTED_PROXIES") {
            Some(v) => TrustedProxies::parse(&v).map_err(|m| bad("TRUSTED_PROXIES", m))?,
            None => d.trusted_proxies,
        };
        let external_service_url = var("EXTERNAL_SERVICE_URL")
            .map(|v| parse_upstream_url(v.trim()))
            .transpose()?;
        let cb_reset_timeout = match var("CB_RESET_TIMEOUT") {
            Some(v) => parse_seconds("CB_RESET_TIMEOUT", &v)?,
            None => d.cb_reset_timeout,
        };
        let external_service_failure_rate = match var("EXTERNAL_SERVICE_FAILURE_RATE") {
            Some(v) => match v.trim().parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => p,
                _ => {
                    return Err(bad(
                        "EXTERNAL_SERVICE_FAILURE_RATE",
                        format!("{v:?} is not a probability between 0 and 1"),
                    ))
                }
            },
            None => d.external_service_failure_rate,
        };
        let host = var("HOST").map(|h| h.trim().to_string()).unwrap_or(d.host);
        Ok(Config {
            redis_urls,
            redis_cluster,
            redis_ca,
            redis_timeout: timeout_ms(&var, "REDIS_TIMEOUT_MS", d.redis_timeout)?,
            redis_wait_replicas: int(&var, "REDIS_WAIT_REPLICAS", 0, 1000, 0)? as u32,
            // WAIT with timeout 0 blocks forever: not allowed.
            redis_wait_timeout_ms: int(
                &var,
                "REDIS_WAIT_TIMEOUT_MS",
                1,
                60_000,
                d.redis_wait_timeout_ms,
            )?,
            host,
            port: int(&var, "PORT", 0, u16::MAX as u64, d.port as u64)? as u16,
            rate_limit: int(&var, "RATE_LIMIT", 1, i64::MAX as u64, d.rate_limit)?,
            rate_window_s: int(&var, "RATE_WINDOW", 1, MAX_RATE_WINDOW_S, d.rate_window_s)?,
            trusted_proxies,
            cb_failure_threshold: int(
                &var,
                "CB_FAILURE_THRESHOLD",
                1,
                u32::MAX as u64,
                d.cb_failure_threshold as u64,
            )? as u32,
            cb_reset_timeout,
            external_service_url,
            external_service_failure_rate,
            external_service_timeout: timeout_ms(
                &var,
                "EXTERNAL_SERVICE_TIMEOUT_MS",
                d.external_service_timeout,
            )?,
            batch_max: int(&var, "BATCH_MAX", 1, 1_000_000, d.batch_max as u64)? as usize,
            max_types: int(&var, "MAX_TYPES", 1, MAX_MAX_TYPES, d.max_types as u64)? as usize,
            max_series_per_type: int(
                &var,
                "MAX_SERIES_PER_TYPE",
                1,
                MAX_MAX_TYPES,
                d.max_series_per_type as u64,
            )? as usize,
            workers: match var("WORKERS") {
                Some(_) => Some(int(&var, "WORKERS", 1, 1024, 1)? as usize),
                None => d.workers,
            },
            policy_file: match var("POLICY_FILE") {
                Some(path) => Some(
                    policy_file::read(path.trim())
                        .map_err(|e| bad("POLICY_FILE", e.to_string()))?,
                ),
                None => None,
            },
        })
    }

    /// The rate-limit window in milliseconds, as `RATELIMIT.CHECK` takes it.
    pub fn rate_window_ms(&self) -> u64 {
        self.rate_window_s * 1000
    }
}

/// An integer variable in `min..=max`, or `default` when unset.
fn int(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    min: u64,
    max: u64,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = var(name) else {
        return Ok(default);
    };
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            name,
            format!("{v:?} is not an integer between {min} and {max}"),
        )),
    }
}

/// A timeout variable in milliseconds, 1 ..= 600000 (ten minutes), or `default` when unset.
fn timeout_ms(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let ms = int(var, name, 1, 600_000, default.as_millis() as u64)?;
    Ok(Duration::from_millis(ms))
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(name, format!("{v:?} is not true/false/1/0"))),
    }
}

fn parse_seconds(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(bad(
            name,
            format!("{v:?} is not a number of seconds between 0 and 86400"),
        )),
    }
}

fn parse_redis_urls(v: &str, cluster: bool) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(bad("REDIS_URL", "no URL given"));
    }
    if urls.len() > 1 && !cluster {
        return Err(bad(
            "REDIS_URL",
            "a list of URLs needs REDIS_CLUSTER=true (one URL otherwise)",
        ));
    }
    let mut first: Option<reqwest::Url> = None;
    for url in &urls {
        let parsed = check_redis_url(url).map_err(|e| bad("REDIS_URL", format!("{url:?}: {e}")))?;
        // Cluster seeds: redis-rs takes the TLS mode and the credentials of the first one.
        if let Some(first) = &first {
            if tls_scheme(first.as_str()) != tls_scheme(url) {
                return Err(bad(
                    "REDIS_URL",
                    "every seed must use the same scheme (all rediss:// or none)",
                ));
            }
            if (first.username(), first.password()) != (parsed.username(), parsed.password()) {
                return Err(bad(
                    "REDIS_URL",
                    "every seed must carry the same user name and password",
                ));
            }
        } else {
            first = Some(parsed);
        }
    }
    Ok(urls)
}

/// Whether a (checked) Redis URL asks for TLS.
fn tls_scheme(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("valkeys://")
}

/// The shape of one Redis URL: `redis://` (`valkey://`), or `rediss://` (`valkeys://`, TLS),
/// with a host and optional `user:password@`, or `unix://` (`redis+unix://`, `valkey+unix://`)
/// with a path. The store, built at start-up, checks the rest (a start-up error too).
fn check_redis_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "rediss" | "valkeys" if parsed.fragment() == Some("insecure") => {
            Err("#insecure (no certificate verification) is not supported".to_string())
        }
        "redis" | "valkey" | "rediss" | "valkeys" => {
            match parsed.host_str().map(|h| h.trim_matches(['[', ']'])) {
                None | Some("") => return Err("the URL names no host".to_string()),
                Some("0.0.0.0" | "::") => return Err("the host is a wildcard address".to_string()),
                Some(_) => {}
            }
            database(parsed.path().trim_matches('/'))?;
            Ok(parsed)
        }
        "unix" | "redis+unix" | "valkey+unix" if !parsed.path().is_empty() => {
            if let Some((_, db)) = parsed.query_pairs().find(|(k, _)| k == "db") {
                database(&db)?;
            }
            Ok(parsed)
        }
        scheme => Err(format!("{scheme}:// is not a Redis URL")),
    }
}

/// Reads `REDIS_CA_FILE`: a readable file of one or more PEM certificates (nothing else).
fn read_ca_file(path: &str) -> Result<CaFile, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(path)
        .map_err(|e| bad("REDIS_CA_FILE", format!("cannot read {path:?}: {e}")))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad("REDIS_CA_FILE", format!("{path:?} is not PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(
            "REDIS_CA_FILE",
            format!("{path:?} holds no PEM certificate"),
        ));
    }
    Ok(CaFile {
        path: path.to_string(),
        pem,
    })
}

/// A database number (empty: the default, 0).
fn database(db: &str) -> Result<(), String> {
    if db.is_empty() || db.parse::<i64>().is_ok() {
        Ok(())
    } else {
        Err(format!("{db:?} is not a database number"))
    }
}

fn parse_upstream_url(v: &str) -> Result<String, ConfigError> {
    let https = v.starts_with("https://");
    if !(v.starts_with("http://") || https) {
        return Err(bad(
            "EXTERNAL_SERVICE_URL",
            format!("{v:?} is not an http:// URL"),
        ));
    }
    if https && !cfg!(feature = "https") {
        return Err(bad(
            "EXTERNAL_SERVICE_URL",
            "https:// needs tally-api built with the `https` feature",
        ));
    }
    reqwest::Url::parse(v)
        .map_err(|e| bad("EXTERNAL_SERVICE_URL", format!("{v:?}: {e}")))
        .map(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn an_empty_environment_gives_the_documented_defaults() {
        let c = from(&[]).unwrap();
        assert_eq!(c.redis_urls, ["redis://127.0.0.1:6379"]);
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8000));
        assert_eq!((c.rate_limit, c.rate_window_s), (5, 60));
        assert_eq!(c.rate_window_ms(), 60_000);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.cb_failure_threshold, 3);
        assert_eq!(c.cb_reset_timeout, Duration::from_secs(10));
        assert_eq!(c.external_service_url, None);
        assert_eq!(c.external_service_failure_rate, 0.2);
        assert!(!c.redis_cluster);
        assert_eq!((c.redis_wait_replicas, c.redis_wait_timeout_ms), (0, 100));
        assert_eq!(c.batch_max, 1000);
        assert_eq!(c.max_types, 10_000);
        assert_eq!(c.workers, None);
        assert_eq!(from(&[("WORKERS", "3")]).unwrap().workers, Some(3));
    }

    #[test]
    fn every_bad_value_is_reported_with_its_variable_name() {
        for (name, value) in [
            ("REDIS_URL", "not a url"),
            ("REDIS_URL", "http://a:1"),
            ("REDIS_URL", "redis://"),
            ("REDIS_URL", "rediss://redis:6380#insecure"),
            ("REDIS_URL", "rediss://"),
            ("REDIS_URL", "redis://0.0.0.0:6379"),
            ("REDIS_URL", "redis://redis:6379/zero"),
            ("REDIS_URL", "unix:///run/redis.sock?db=x"),
            ("REDIS_URL", "redis://a:1,redis://b:2"),
            ("PORT", "70000"),
            ("PORT", "eighty"),
            ("RATE_LIMIT", "0"),
            ("RATE_LIMIT", "-5"),
            ("RATE_WINDOW", "1.5"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.local"),
            ("CB_FAILURE_THRESHOLD", "0"),
            ("CB_RESET_TIMEOUT", "-1"),
            ("CB_RESET_TIMEOUT", "soon"),
            ("EXTERNAL_SERVICE_URL", "ftp://x"),
            ("EXTERNAL_SERVICE_FAILURE_RATE", "1.5"),
            ("EXTERNAL_SERVICE_FAILURE_RATE", "NaN"),
            ("EXTERNAL_SERVICE_TIMEOUT_MS", "0"),
            ("REDIS_CLUSTER", "yes please"),
            ("REDIS_WAIT_REPLICAS", "-1"),
            ("REDIS_WAIT_TIMEOUT_MS", "0"),
            ("BATCH_MAX", "0"),
            ("MAX_TYPES", "0"),
            ("MAX_TYPES", "10k"),
            ("MAX_TYPES", "20000000"),
            ("WORKERS", "0"),
            ("WORKERS", "many"),
            ("REDIS_TIMEOUT_MS", "x"),
        ] {
            let err = from(&[(name, value)]).expect_err(name);
            assert_eq!(err.variable, name, "{value}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn max_series_per_type_defaults_to_1000_and_is_a_strict_integer() {
        assert_eq!(from(&[]).unwrap().max_series_per_type, 1000);
        assert_eq!(
            from(&[("MAX_SERIES_PER_TYPE", "3")])
                .unwrap()
                .max_series_per_type,
            3
        );
        for bad in ["0", "x", "-1", "20000000"] {
            let err = from(&[("MAX_SERIES_PER_TYPE", bad)]).expect_err(bad);
            assert_eq!(err.variable, "MAX_SERIES_PER_TYPE");
        }
    }

    #[test]
    fn max_types_is_a_strict_integer() {
        assert_eq!(from(&[("MAX_TYPES", " 25 ")]).unwrap().max_types, 25);
        for bad in ["1e3", "5 types", "-1", "0x10"] {
            let err = from(&[("MAX_TYPES", bad)]).expect_err(bad);
            assert_eq!(err.variable, "MAX_TYPES");
        }
    }

    #[test]
    fn cluster_mode_takes_a_list_of_seed_nodes() {
        let c = from(&[
            ("REDIS_CLUSTER", "1"),
            ("REDIS_URL", "redis://a:7000, redis://b:7001"),
        ])
        .unwrap();
        assert!(c.redis_cluster);
        assert_eq!(c.redis_urls, ["redis://a:7000", "redis://b:7001"]);
    }

    #[test]
    fn redis_urls_of_every_scheme_the_store_dials_are_accepted() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:secret@redis:6379/2",
            "redis://tally-api:secret@redis:6379",
            "rediss://redis.example:6380",
            "rediss://tally-api:secret@10.0.0.5:6380/1",
            "valkeys://valkey.example:6380",
            "valkey://valkey.example:6380",
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=1",
        ] {
            assert_eq!(from(&[("REDIS_URL", url)]).unwrap().redis_urls, [url]);
        }
    }

    #[test]
    fn cluster_seeds_share_one_scheme_and_one_set_of_credentials() {
        let cluster = |urls: &str| from(&[("REDIS_CLUSTER", "true"), ("REDIS_URL", urls)]);
        let ok = "rediss://u:p@a:7000,rediss://u:p@b:7001";
        assert_eq!(cluster(ok).unwrap().redis_urls.len(), 2);
        for bad in [
            "rediss://a:7000,redis://b:7001",
            "redis://a:7000,rediss://b:7001",
            "rediss://u:p@a:7000,rediss://u:q@b:7001",
            "rediss://u:p@a:7000,rediss://b:7001",
            "redis://v:p@a:7000,redis://u:p@b:7001",
        ] {
            let err = cluster(bad).expect_err(bad);
            assert_eq!(err.variable, "REDIS_URL", "{bad}");
        }
    }

    /// A temporary file with `contents`, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "tally-config-{}-{name}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A self-signed certificate (any DER will do for the PEM check).
    const PEM: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ0Ew\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_ca_file_is_read_at_start_up_and_must_hold_pem_certificates() {
        let good = TempFile::new("good", PEM.as_bytes());
        let c = from(&[
            ("REDIS_URL", "rediss://redis:6380"),
            ("REDIS_CA_FILE", good.path()),
        ])
        .unwrap();
        let ca = c.redis_ca.expect("the CA is read");
        assert_eq!(
            (ca.path.as_str(), ca.pem.as_slice()),
            (good.path(), PEM.as_bytes())
        );
        assert_eq!(from(&[]).unwrap().redis_ca, None);

        let not_pem = TempFile::new("text", b"just some text\n");
        let empty = TempFile::new("empty", b"");
        let key = TempFile::new(
            "key",
            b"-----BEGIN PRIVATE KEY-----\nMIIBszCCAVmgAwIBAgIUQ0Ew\n-----END PRIVATE KEY-----\n",
        );
        let broken = TempFile::new("broken", b"-----BEGIN CERTIFICATE-----\n%%%%\n");
        for (url, path) in [
            ("rediss://redis:6380", "/nonexistent/tally/ca.pem"),
            ("rediss://redis:6380", "/"),
            ("rediss://redis:6380", not_pem.path()),
            ("rediss://redis:6380", empty.path()),
            ("rediss://redis:6380", key.path()),
            ("rediss://redis:6380", broken.path()),
            // A CA with a plain-text URL would silently not be used.
            ("redis://redis:6379", good.path()),
        ] {
            let err = from(&[("REDIS_URL", url), ("REDIS_CA_FILE", path)]).expect_err(path);
            assert_eq!(err.variable, "REDIS_CA_FILE", "{path}: {err}");
            assert!(err.to_string().contains("REDIS_CA_FILE"), "{err}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = from(&[("TRUSTED_PROXIES", ""), ("EXTERNAL_SERVICE_URL", " ")]).unwrap();
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.external_service_url, None);
    }

    #[test]
    fn the_reset_timeout_may_be_a_fraction_of_a_second() {
        let c = from(&[("CB_RESET_TIMEOUT", "0.25")]).unwrap();
        assert_eq!(c.cb_reset_timeout, Duration::from_millis(250));
    }
}
