//! The API against production-style Redis (SPEC section 7): TLS-only servers (`rediss://`,
//! `REDIS_CA_FILE`) and the least-privilege ACL user of the README (its `ACL SETUSER` line is
//! read from README.md, so the documented line is the tested one). The release `tally-api`
//! binary runs as a real process.

use std::process::Command;
use std::time::{Duration, Instant};

use tally_tests::api::{metric_body, now_rfc3339, post_metric, ApiProc};
use tally_tests::http::{client, send, Reply};
use tally_tests::tls::{readme_acl_words, Pki, TlsCluster, TlsServer};

const PASSWORD: &str = "s3cret-Tally-pw";

/// Creates the README's user on `server`.
fn create_user(server: &TlsServer, pki: &Pki) {
    let words = readme_acl_words(PASSWORD);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    assert_eq!(server.cli(pki, &words).trim(), "OK", "{words:?}");
}

fn url(user: &str, password: &str, port: u16) -> String {
    format!("rediss://{user}:{password}@127.0.0.1:{port}")
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Reply {
    send(http.get(format!("{base}{path}")))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn post(http: &reqwest::Client, base: &str, kind: &str, value: i64) -> Reply {
    send(post_metric(http, base, kind, value))
        .await
        .unwrap_or_else(|e| panic!("POST {kind}: {e}"))
}

/// Polls `path` until it answers `status` (or 15 s pass); the last reply.
async fn until_status(http: &reqwest::Client, base: &str, path: &str, status: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(http, base, path).await;
        if r.status == status || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/api/ratelimit/decisions` and `/top` until `allowed` and `denied` decisions are
/// summed and the top holds `denied_client` (or 15 s pass): the limiter analytics are written
/// (`METRIC.ADD` on `tally:decisions:*`; `ZINCRBY`, `ZREMRANGEBYRANK`, `EXPIRE` on
/// `tally:top:*`) and read (`METRIC.RANGE`, `ZRANGE`) as the README's user.
async fn until_analytics(
    http: &reqwest::Client,
    base: &str,
    allowed: u64,
    denied: u64,
    denied_client: Option<&str>,
) {
    let total = |body: &serde_json::Value, outcome: &str| -> u64 {
        body["policies"]["default"][outcome]
            .as_array()
            .map_or(0, |points| {
                points.iter().map(|p| p[1].as_u64().unwrap_or(0)).sum()
            })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = get(http, base, "/api/ratelimit/decisions?window=900&bucket=10").await;
        let t = get(http, base, "/api/ratelimit/top").await;
        assert_eq!(d.status, 200, "{}", d.body);
        assert_eq!(t.status, 200, "{}", t.body);
        let body = d.json();
        let sums = (total(&body, "allowed"), total(&body, "denied"));
        let listed = denied_client.is_none_or(|c| t.body.contains(&format!("\"{c}\"")));
        if sums == (allowed, denied) && listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "decisions {sums:?}, want ({allowed}, {denied}); top {}",
            t.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the API's log until it holds `needle` (the log is written as requests fail).
async fn until_logged(api: &ApiProc, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if api.log().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_works_over_tls_as_the_readme_acl_user_and_nothing_else_is_allowed() {
    let pki = Pki::generate();
    let server = TlsServer::start(&pki);
    create_user(&server, &pki);
    let ca = pki.ca();
    let api = ApiProc::start(
        &url("tally-api", PASSWORD, server.port),
        &[("REDIS_CA_FILE", &ca), ("RATE_LIMIT", "1000000")],
    );
    let (http, base) = (client(), api.base());

    let health = until_status(&http, &base, "/health", 200).await;
    assert_eq!(health.status, 200, "{}", health.body);
    for v in [1, 2, 3] {
        let r = post(&http, &base, "load", v).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let batch = send(
        http.post(format!("{base}/api/metrics/batch"))
            .header("content-type", "application/json")
            .body(format!(
                "[{},{}]",
                metric_body("load", 4),
                metric_body("cpu", 50)
            )),
    )
    .await
    .expect("batch");
    assert_eq!(batch.status, 201, "{}", batch.body);
    let summary = get(&http, &base, "/api/metrics/summary?metric_type=load").await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.json()["count"], 4, "{}", summary.body);
    let windowed = get(
        &http,
        &base,
        "/api/metrics/summary?metric_type=load&window=60",
    )
    .await;
    assert_eq!(windowed.status, 200, "{}", windowed.body);
    let series = send(http.get(format!("{base}/api/metrics/series")).query(&[
        ("metric_type", "load"),
        ("bucket", "1"),
        ("to", &now_rfc3339()),
    ]))
    .await
    .expect("series");
    assert_eq!(series.status, 200, "{}", series.body);
    assert!(series.body.contains("\"count\""), "{}", series.body);
    let types = get(&http, &base, "/api/metrics/types").await;
    assert_eq!(types.status, 200, "{}", types.body);
    assert!(
        types.body.contains("\"load\"") && types.body.contains("\"cpu\""),
        "{}",
        types.body
    );
    let metrics = get(&http, &base, "/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    // The limiter analytics, with denials from a second instance whose limit is 1 (the
    // client, 127.0.0.1, has used more already).
    let strict = ApiProc::start(
        &url("tally-api", PASSWORD, server.port),
        &[("REDIS_CA_FILE", &ca), ("RATE_LIMIT", "1")],
    );
    assert_eq!(post(&http, &strict.base(), "load", 5).await.status, 429);
    assert_eq!(post(&http, &strict.base(), "load", 6).await.status, 429);
    // 3 POSTs and a batch allowed here, 2 denied there.
    until_analytics(&http, &base, 4, 2, Some("127.0.0.1")).await;
    assert_eq!(
        server.cli(&pki, &["ACL", "LOG"]).trim(),
        "",
        "{}",
        strict.log()
    );
    drop(strict);
    // Labels: a tagged write (the series index script, a `series:` key) and the labelled
    // reads (SMEMBERS of the index, METRIC.EXPORT) under the same user.
    let tagged = send(
        http.post(format!("{base}/api/metrics"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"timestamp":"{}","value":7,"type":"load","tags":{{"host":"web-1"}}}}"#,
                now_rfc3339()
            )),
    )
    .await
    .expect("tagged POST");
    assert_eq!(tagged.status, 201, "{}", tagged.body);
    for path in [
        "/api/metrics/summary?metric_type=load&tag.host=web-1",
        "/api/metrics/summary?metric_type=load&group_by=host",
        "/api/metrics/series?metric_type=load&group_by=host",
        "/api/metrics/tags?metric_type=load",
    ] {
        let r = get(&http, &base, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let needle = if path.contains("tag.host") {
            "\"count\":1,"
        } else {
            "web-1"
        };
        assert!(r.body.contains(needle), "{path}: {}", r.body);
    }

    // The type index rebuilt from SCAN (the path a deployment without the marker takes) runs
    // under the same user: drop the marker and the index as an admin, then list again from a
    // fresh API process (this one caches what it knows).
    assert_eq!(
        server
            .cli(&pki, &["DEL", "tally:types", "tally:types:built"])
            .trim(),
        "2"
    );
    drop(api);
    let api = ApiProc::start(
        &url("tally-api", PASSWORD, server.port),
        &[("REDIS_CA_FILE", &ca), ("RATE_LIMIT", "1000000")],
    );
    let types = get(&http, &api.base(), "/api/metrics/types").await;
    assert_eq!(types.status, 200, "{}", types.body);
    assert!(types.body.contains("\"cpu\""), "{}", types.body);

    // The API never met a refusal: Redis logs every ACL denial.
    assert_eq!(
        server.cli(&pki, &["ACL", "LOG"]).trim(),
        "",
        "{}",
        api.log()
    );

    // The same user may not do anything else.
    let as_api = |args: &[&str]| server.cli_as(&pki, "tally-api", PASSWORD, args);
    for cmd in [
        &["FLUSHALL"][..],
        &["CONFIG", "GET", "maxmemory"],
        &["KEYS", "*"],
        &["DEBUG", "SLEEP", "0"],
        &["MODULE", "LIST"],
        &["GET", "some:other:key"],
    ] {
        let out = as_api(cmd);
        assert!(out.contains("NOPERM"), "{cmd:?}: {out}");
    }
    // What it sends in other modes is allowed (WAIT with REDIS_WAIT_REPLICAS).
    assert_eq!(as_api(&["WAIT", "0", "10"]).trim(), "0");
    assert_eq!(
        server
            .cli(&pki, &["DBSIZE"])
            .trim()
            .parse::<u64>()
            .ok()
            .map(|n| n > 0),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_host_name_or_password_is_a_503_with_a_clear_log_and_the_right_ca_recovers() {
    let pki = Pki::generate();
    let server = TlsServer::start(&pki);
    create_user(&server, &pki);
    let http = client();
    let target = url("tally-api", PASSWORD, server.port);

    let other_ca = pki.other_ca();
    let mut api = ApiProc::start(&target, &[("REDIS_CA_FILE", &other_ca)]);
    let health = get(&http, &api.base(), "/health").await;
    assert_eq!(health.status, 503, "{}", health.body);
    let r = post(&http, &api.base(), "load", 1).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        until_logged(&api, "TLS handshake with 127.0.0.1").await,
        "{}",
        api.log()
    );
    assert!(
        api.log().contains("invalid peer certificate"),
        "{}",
        api.log()
    );
    assert!(api.is_running(), "the API keeps running");
    assert_eq!(
        server.cli(&pki, &["DBSIZE"]).trim(),
        "0",
        "nothing was written"
    );

    // Restarted with the right CA, it serves.
    api.kill();
    let ca = pki.ca();
    let api = ApiProc::start(&target, &[("REDIS_CA_FILE", &ca)]);
    let health = until_status(&http, &api.base(), "/health", 200).await;
    assert_eq!(health.status, 200, "{}", health.body);
    let r = post(&http, &api.base(), "load", 1).await;
    assert_eq!(r.status, 201, "{}", r.body);
    drop(api);

    // The right CA but a wrong password.
    let api = ApiProc::start(
        &url("tally-api", "not-the-password", server.port),
        &[("REDIS_CA_FILE", &ca)],
    );
    let health = get(&http, &api.base(), "/health").await;
    assert_eq!(health.status, 503, "{}", health.body);
    let r = post(&http, &api.base(), "load", 2).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        until_logged(&api, "authentication failed").await,
        "{}",
        api.log()
    );
    drop(api);

    // The right CA, but a certificate for another host name.
    let elsewhere = TlsServer::start_as(&pki, "elsewhere", &[]);
    create_user(&elsewhere, &pki);
    let api = ApiProc::start(
        &url("tally-api", PASSWORD, elsewhere.port),
        &[("REDIS_CA_FILE", &ca)],
    );
    let health = get(&http, &api.base(), "/health").await;
    assert_eq!(health.status, 503, "{}", health.body);
    let r = post(&http, &api.base(), "load", 3).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        until_logged(&api, "not valid for name").await,
        "{}",
        api.log()
    );
    assert!(
        api.log().contains("TLS handshake with 127.0.0.1"),
        "{}",
        api.log()
    );
    assert_eq!(
        elsewhere.cli(&pki, &["DBSIZE"]).trim(),
        "0",
        "nothing was written"
    );
    drop(api);

    // Plain TCP to a TLS-only port is no silent success either (no rediss://).
    let api = ApiProc::start(
        &format!("redis://tally-api:{PASSWORD}@127.0.0.1:{}", server.port),
        &[],
    );
    let health = get(&http, &api.base(), "/health").await;
    assert_eq!(health.status, 503, "{}", health.body);
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_start_up_naming_the_variable() {
    let pki = Pki::generate();
    let garbage = std::env::temp_dir().join(format!("tally-not-pem-{}", std::process::id()));
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let key = pki.ca().replace("ca.crt", "ca.key");
    for path in [
        "/nonexistent/ca.pem".to_string(),
        garbage.to_string_lossy().into_owned(),
        key,
    ] {
        let out = Command::new(tally_tests::api_path())
            .env_clear()
            .env("REDIS_URL", "rediss://127.0.0.1:6380")
            .env("REDIS_CA_FILE", &path)
            .env("PORT", "0")
            .output()
            .expect("run tally-api");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path}: started");
        assert!(stderr.contains("REDIS_CA_FILE"), "{path}: {stderr}");
    }
    let _ = std::fs::remove_file(garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_the_api_as_the_readme_acl_user() {
    let pki = Pki::generate();
    let cluster = TlsCluster::start(&pki);
    for node in &cluster.nodes {
        create_user(node, &pki);
    }
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| url("tally-api", PASSWORD, n.port))
        .collect();
    let ca = pki.ca();
    let api = ApiProc::start(
        &seeds.join(","),
        &[
            ("REDIS_CLUSTER", "true"),
            ("REDIS_CA_FILE", &ca),
            ("RATE_LIMIT", "1000000"),
        ],
    );
    let (http, base) = (client(), api.base());
    let health = until_status(&http, &base, "/health", 200).await;
    assert_eq!(health.status, 200, "{}", health.body);
    // Enough types to land on every primary.
    let kinds: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for (i, kind) in kinds.iter().enumerate() {
        let r = post(&http, &base, kind, i as i64).await;
        assert_eq!(r.status, 201, "{kind}: {}", r.body);
    }
    let batch = send(
        http.post(format!("{base}/api/metrics/batch"))
            .header("content-type", "application/json")
            .body(format!(
                "[{}]",
                kinds
                    .iter()
                    .map(|k| metric_body(k, 7))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
    )
    .await
    .expect("batch");
    assert_eq!(batch.status, 201, "{}", batch.body);
    for kind in &kinds {
        let s = get(
            &http,
            &base,
            &format!("/api/metrics/summary?metric_type={kind}"),
        )
        .await;
        assert_eq!(s.status, 200, "{}", s.body);
        assert_eq!(s.json()["count"], 2, "{kind}: {}", s.body);
    }
    let types = get(&http, &base, "/api/metrics/types").await;
    assert_eq!(types.status, 200, "{}", types.body);
    for kind in &kinds {
        assert!(
            types.body.contains(&format!("\"{kind}\"")),
            "{}",
            types.body
        );
    }
    // 12 POSTs and a batch allowed here, 2 denied by an instance whose limit is 1: the
    // decisions' keys and the minute's set of denied clients are on slots of their own.
    let strict = ApiProc::start(
        &seeds.join(","),
        &[
            ("REDIS_CLUSTER", "true"),
            ("REDIS_CA_FILE", &ca),
            ("RATE_LIMIT", "1"),
        ],
    );
    for v in [1, 2] {
        assert_eq!(post(&http, &strict.base(), "t0", v).await.status, 429);
    }
    until_analytics(&http, &base, 13, 2, Some("127.0.0.1")).await;
    drop(strict);
    // Every primary took some of the keys, and none logged an ACL denial.
    for node in &cluster.nodes {
        assert_ne!(node.cli(&pki, &["DBSIZE"]).trim(), "0");
        assert_eq!(node.cli(&pki, &["ACL", "LOG"]).trim(), "", "{}", api.log());
    }
}
