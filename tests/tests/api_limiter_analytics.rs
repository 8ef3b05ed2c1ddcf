//! Limiter analytics (SPEC §10): decisions counted per instance in memory and flushed to
//! Redis, summed exactly over every instance by `GET /api/ratelimit/decisions`; the most
//! denied clients (`GET /api/ratelimit/top`) from bounded memory, in the API and in Redis.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tally_tests::api::{post_metric_from, ApiProc};
use tally_tests::http::{client, json};
use tally_tests::{redis, Server};

/// `POST /api/metrics` as `client` (through a trusted proxy: 127.0.0.1); the status.
async fn post_as(http: &reqwest::Client, base: &str, client: &str) -> u16 {
    post_metric_from(http, base, "cpu", 1, client).await
}

/// Every decision of `outcome` of the default policy in the last 15 minutes, as `base` sums
/// them.
async fn total(http: &reqwest::Client, base: &str, outcome: &str) -> u64 {
    let resp = http
        .get(format!(
            "{base}/api/ratelimit/decisions?window=900&bucket=10"
        ))
        .send()
        .await
        .expect("GET decisions");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["window"], 900);
    assert_eq!(body["bucket"], 10);
    let points = body["policies"]["default"][outcome]
        .as_array()
        .unwrap_or_else(|| panic!("{outcome}: {body}"));
    // Every 10 s bucket of the window is listed, oldest first.
    assert!((90..=91).contains(&points.len()), "{}", points.len());
    let ts: Vec<u64> = points.iter().map(|p| p[0].as_u64().expect("ts")).collect();
    assert!(ts.windows(2).all(|w| w[1] == w[0] + 10), "{ts:?}");
    points.iter().map(|p| p[1].as_u64().expect("n")).sum()
}

async fn top(http: &reqwest::Client, base: &str, limit: usize) -> Vec<(String, u64)> {
    let resp = http
        .get(format!("{base}/api/ratelimit/top?window=900&limit={limit}"))
        .send()
        .await
        .expect("GET top");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["client"].as_str().expect("client").to_string(),
                e["denied"].as_u64().expect("denied"),
            )
        })
        .collect()
}

/// Polls `f` until it is true (the flush runs once a second) or 15 s have passed.
async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn decisions_of_two_instances_are_summed_exactly() {
    let server = Server::start();
    let env = [("RATE_LIMIT", "5"), ("TRUSTED_PROXIES", "127.0.0.1")];
    let a = ApiProc::start(&server.url(), &env);
    let b = ApiProc::start(&server.url(), &env);
    let http = client();
    let (mut allowed, mut denied) = (0u64, 0u64);
    // Three clients share their budgets across both instances (the limit is in Redis).
    for i in 0..36 {
        let base = if i % 3 == 0 { b.base() } else { a.base() };
        let who = format!("198.51.100.{}", i % 3);
        match post_as(&http, &base, &who).await {
            201 => allowed += 1,
            429 => denied += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((allowed, denied), (15, 21));
    // Both instances answer the same sums, once both have flushed.
    for base in [a.base(), b.base()] {
        let ok = eventually(|| {
            let (http, base) = (&http, &base);
            async move {
                total(http, base, "allowed").await == allowed
                    && total(http, base, "denied").await == denied
            }
        })
        .await;
        assert!(
            ok,
            "{base}: allowed {} denied {} (want {allowed}, {denied})",
            total(&http, &base, "allowed").await,
            total(&http, &base, "denied").await
        );
        assert_eq!(total(&http, &base, "shadow_denied").await, 0);
    }
    // The sums stay exact: nothing is written twice by later flushes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(total(&http, &a.base(), "allowed").await, allowed);
    assert_eq!(total(&http, &b.base(), "denied").await, denied);
    // Each client was denied on both instances: the top sums them.
    let t = top(&http, &a.base(), 10).await;
    assert_eq!(
        t,
        vec![
            ("198.51.100.0".to_string(), 7),
            ("198.51.100.1".to_string(), 7),
            ("198.51.100.2".to_string(), 7)
        ]
    );
}

#[tokio::test]
async fn bad_parameters_are_422_naming_them() {
    let server = Server::start();
    let api = ApiProc::start(&server.url(), &[]);
    let http = client();
    for (path, needle) in [
        ("/api/ratelimit/decisions?window=0", "window"),
        ("/api/ratelimit/decisions?window=abc", "window"),
        ("/api/ratelimit/decisions?window=900&bucket=0", "bucket"),
        ("/api/ratelimit/decisions?window=86400&bucket=1", "bucket"),
        (
            "/api/ratelimit/decisions?window=999999999999999999999",
            "window",
        ),
        ("/api/ratelimit/top?limit=0", "limit"),
        ("/api/ratelimit/top?limit=101", "limit"),
        ("/api/ratelimit/top?window=3601", "window"),
    ] {
        let resp = http
            .get(format!("{}{path}", api.base()))
            .send()
            .await
            .unwrap();
        let (status, body) = json(resp).await;
        assert_eq!(status, 422, "{path}: {body}");
        let detail = body["detail"].as_str().expect("detail");
        assert!(detail.contains(needle), "{path}: {detail}");
    }
    // The defaults answer an empty limiter.
    assert!(top(&http, &api.base(), 10).await.is_empty());
    assert_eq!(total(&http, &api.base(), "denied").await, 0);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Denies each of `n` distinct clients once (each is allowed once first), with `heavy`
/// denied once every 15 of them; the heavy client's denials.
async fn deny_distinct(http: &reqwest::Client, base: &str, first: u32, n: u32, heavy: &str) -> u64 {
    let requests: Vec<String> = (first..first + n)
        .flat_map(|i| {
            let c = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let mut v = vec![c.clone(), c];
            if i % 15 == 0 {
                v.push(heavy.to_string());
            }
            v
        })
        .collect();
    // 16 chunks in flight; whatever the order, a client's two requests under a limit of 1 are
    // one 201 and one 429.
    let statuses: Vec<(String, u16)> = stream::iter(requests.chunks(3).map(|c| c.to_vec()))
        .map(|chunk| async move {
            let mut out = Vec::new();
            for who in chunk {
                let s = post_as(http, base, &who).await;
                out.push((who, s));
            }
            out
        })
        .buffer_unordered(16)
        .flat_map(stream::iter)
        .collect()
        .await;
    let mut heavy_denied = 0;
    for (who, s) in statuses {
        assert!(s == 201 || s == 429, "{who}: {s}");
        if who == heavy && s == 429 {
            heavy_denied += 1;
        }
    }
    heavy_denied
}

#[tokio::test]
async fn the_top_is_exact_for_a_heavy_client_and_memory_is_bounded_among_3000_denied_clients() {
    let server = Server::start();
    let api = ApiProc::start(
        &server.url(),
        &[("RATE_LIMIT", "1"), ("TRUSTED_PROXIES", "127.0.0.1")],
    );
    let http = client();
    let heavy = "203.0.113.7";
    let pid = api.pid().expect("running");
    let mut heavy_denied = deny_distinct(&http, &api.base(), 0, 1000, heavy).await;
    let rss_after_1000 = rss_kib(pid);
    heavy_denied += deny_distinct(&http, &api.base(), 1000, 2000, heavy).await;
    let rss_after_3000 = rss_kib(pid);
    assert!(heavy_denied >= 190, "{heavy_denied}");
    // The heavy client first, with its exact count, then clients denied once.
    let ok = eventually(|| {
        let http = &http;
        let base = api.base();
        async move { top(http, &base, 10).await.first() == Some(&(heavy.to_string(), heavy_denied)) }
    })
    .await;
    let t = top(&http, &api.base(), 10).await;
    assert!(ok, "{t:?} (want {heavy} with {heavy_denied})");
    assert_eq!(t.len(), 10);
    assert!(t[1..].iter().all(|(_, n)| *n == 1), "{t:?}");
    // Redis: each minute's set holds at most 1000 clients, and little memory.
    let mut conn = server.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tally:top:*")
        .query(&mut conn)
        .expect("KEYS");
    assert!(!keys.is_empty() && keys.len() <= 3, "{keys:?}");
    for key in &keys {
        let n: u64 = redis::cmd("ZCARD")
            .arg(key)
            .query(&mut conn)
            .expect("ZCARD");
        assert!(n <= 1000, "{key}: {n}");
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query(&mut conn)
            .expect("MEMORY USAGE");
        assert!(bytes < 256 * 1024, "{key}: {bytes} bytes");
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).expect("TTL");
        assert!(ttl > 0 && ttl <= 3720, "{key}: ttl {ttl}");
    }
    // The API: 2000 more distinct clients cost no memory in proportion (its table has 1024
    // entries whatever the number of clients).
    let growth = rss_after_3000.saturating_sub(rss_after_1000);
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB ({rss_after_1000} -> {rss_after_3000})"
    );
}
