//! Rate-limit policies for API fleets (SPEC section 8) against real servers: tiers of several
//! policies in one check, the IETF headers of every enforced policy, the 429 naming its
//! policy, API keys (created, listed and revoked with `tally-api keys`, stored only as
//! digests), shadow policies, read limits, several API instances sharing exact limits, and
//! `POST /api/limits/check`.

use std::time::{Duration, Instant};

use serde_json::json;
use tally_tests::api::{metric, TestApp};
use tally_tests::http::{header, json};
use tally_tests::policies::{get_with_key, PolicyFile};
use tally_tests::redis::Value;
use tally_tests::{text, Server};

const FILE: &str = r#"
[policies]
burst  = { limit = 3,    window = "10s" }
minute = { limit = 5,    window = "1m" }
hour   = { limit = 1000, window = "1h" }
reads  = { limit = 2,    window = "1m" }
probe  = { limit = 2,    window = "1m", shadow = true }

[tiers.anonymous]
ingest = ["minute"]
read   = []

[tiers.pro]
ingest = ["burst", "hour", "probe"]
read   = ["reads"]

[tiers.bulk]
ingest = ["hour"]
"#;

/// `POST /api/metrics` as client `ip` (through the trusted 127.0.0.1), with `key` in the
/// header `how` ("bearer" or "x-api-key").
async fn post(app: &TestApp, ip: &str, key: Option<(&str, &str)>) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/api/metrics", app.base))
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(metric("cpu"));
    match key {
        Some(("bearer", k)) => req = req.header("authorization", format!("Bearer {k}")),
        Some((_, k)) => req = req.header("x-api-key", k),
        None => {}
    }
    req.send().await.expect("POST")
}

async fn summary(app: &TestApp, key: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}/api/metrics/summary?metric_type=cpu", app.base));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.expect("GET")
}

async fn limits_check(
    app: &TestApp,
    key: Option<&str>,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/api/limits/check", app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    req.send().await.expect("POST /api/limits/check")
}

/// Every key in Redis (a full SCAN).
fn all_keys(server: &Server) -> Vec<String> {
    let mut c = server.conn();
    let (mut cursor, mut keys) = ("0".to_string(), Vec::new());
    loop {
        let v = server
            .run(&mut c, &["SCAN", &cursor, "COUNT", "1000"])
            .expect("SCAN");
        let Value::Array(parts) = v else {
            panic!("SCAN: {v:?}")
        };
        let Value::Array(page) = &parts[1] else {
            panic!("SCAN page: {parts:?}")
        };
        keys.extend(page.iter().map(text));
        cursor = text(&parts[0]);
        if cursor == "0" {
            return keys;
        }
    }
}

#[tokio::test]
async fn a_keyed_tier_checks_every_policy_at_once_with_headers_for_each_and_a_429_naming_one() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let app = file.spawn(&server.url()).await;
    let (key, id) = file.create_key(&server.url(), &[], "pro", "ci");
    for i in 0..3 {
        let resp = post(&app, "198.51.100.1", Some(("bearer", &key))).await;
        assert_eq!(resp.status(), 201, "request {i}");
        assert_eq!(
            header(&resp, "ratelimit-policy").as_deref(),
            Some("\"burst\";q=3;w=10, \"hour\";q=1000;w=3600"),
            "the shadow policy is never in the headers"
        );
        assert_eq!(
            header(&resp, "ratelimit").unwrap(),
            format!("\"burst\";r={};t=10, \"hour\";r={};t=3600", 2 - i, 999 - i)
        );
    }
    let resp = post(&app, "198.51.100.1", Some(("bearer", &key))).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(
        header(&resp, "ratelimit").unwrap(),
        "\"burst\";r=0;t=10, \"hour\";r=997;t=3600"
    );
    let (_, body) = json(resp).await;
    assert_eq!(
        body,
        json!({"detail": "Too many requests", "policy": "burst"})
    );
    // All or nothing: the denied request recorded nothing under any policy.
    let mut c = server.conn();
    let log = format!("ratelimit:key:{id}:ingest");
    let peek = server
        .run(
            &mut c,
            &["RATELIMIT.PEEK", &log, "1000", "3600000", "COST", "0"],
        )
        .unwrap();
    assert_eq!(tally_tests::ints(&peek)[2], 997, "three recorded, not four");
    // The anonymous tier is untouched: its own budget, per IP, on ratelimit:<ip>.
    let resp = post(&app, "198.51.100.1", None).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "ratelimit").as_deref(),
        Some("\"minute\";r=4;t=60")
    );
    assert!(tally_tests::api::exists(&server, "ratelimit:198.51.100.1"));
}

#[tokio::test]
async fn bearer_and_x_api_key_share_one_budget_from_different_ips() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let app = file.spawn(&server.url()).await;
    let (key, _) = file.create_key(&server.url(), &[], "pro", "shared");
    let a = post(&app, "198.51.100.1", Some(("bearer", &key))).await;
    let b = post(&app, "203.0.113.9", Some(("x-api-key", &key))).await;
    let c = post(&app, "2001:db8::1", Some(("bearer", &key))).await;
    for r in [&a, &b, &c] {
        assert_eq!(r.status(), 201);
    }
    assert!(header(&c, "ratelimit")
        .unwrap()
        .starts_with("\"burst\";r=0;"));
    let d = post(&app, "192.0.2.55", Some(("x-api-key", &key))).await;
    assert_eq!(d.status(), 429, "the key's budget, whatever the IP");
}

#[tokio::test]
async fn an_unknown_or_revoked_key_is_401_and_uses_no_budget() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let app = file.spawn(&server.url()).await;
    for (how, key) in [
        (
            "bearer",
            "tally_0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("x-api-key", "nonsense"),
        ("x-api-key", ""),
        ("bearer", &"x".repeat(5000)),
    ] {
        let resp = post(&app, "198.51.100.7", Some((how, key))).await;
        assert_eq!(resp.status(), 401, "{how} {}", key.len());
        assert_eq!(header(&resp, "www-authenticate").as_deref(), Some("Bearer"));
        assert!(header(&resp, "ratelimit").is_none());
        let (_, body) = json(resp).await;
        assert_eq!(body, json!({"detail": "invalid API key"}));
        let resp = summary(&app, Some(key)).await;
        assert_eq!(resp.status(), 401, "reads too");
    }
    assert!(
        all_keys(&server)
            .iter()
            .all(|k| !k.starts_with("ratelimit:")),
        "no budget used: {:?}",
        all_keys(&server)
    );
    // Another Authorization scheme is not an API key: an anonymous request.
    let resp = app
        .client
        .post(format!("{}/api/metrics", app.base))
        .header("content-type", "application/json")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(metric("cpu"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn keys_are_listed_and_revoked_by_id_or_name_and_redis_holds_no_plaintext_key() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let url = server.url();
    let (k1, id1) = file.create_key(&url, &[], "pro", "alpha");
    let (k2, id2) = file.create_key(&url, &[], "bulk", "beta");
    assert_ne!(k1, k2);
    assert!(k1.len() >= 6 + 32, "at least 128 random bits: {k1}");
    let (ok, list, _) = file.keys(&url, &[], &["list"]);
    assert!(ok);
    assert!(list.contains(&id1) && list.contains(&id2), "{list}");
    assert!(list.contains("alpha") && list.contains("bulk"), "{list}");
    assert!(
        !list.contains(&k1) && !list.contains(&k2),
        "list never shows a key"
    );
    // An unknown tier, an unknown key to revoke: clear errors.
    let (ok, _, err) = file.keys(&url, &[], &["create", "--tier", "gold"]);
    assert!(!ok && err.contains("tier \"gold\""), "{err}");
    let (ok, _, err) = file.keys(&url, &[], &["revoke", "nobody"]);
    assert!(!ok && err.contains("no key"), "{err}");
    // No plaintext key anywhere: every key name and every value.
    let mut c = server.conn();
    for name in all_keys(&server) {
        assert!(!name.contains(&k1) && !name.contains(&k2), "{name}");
        let dump = server.run(&mut c, &["DUMP", &name]).unwrap();
        let bytes = match dump {
            Value::BulkString(b) => b,
            other => panic!("{other:?}"),
        };
        for k in [&k1, &k2] {
            assert!(
                !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
                "{name} holds a key"
            );
        }
    }
    let app = file.spawn(&url).await;
    assert_eq!(
        post(&app, "198.51.100.1", Some(("bearer", &k1)))
            .await
            .status(),
        201
    );
    let (ok, out, _) = file.keys(&url, &[], &["revoke", "alpha"]);
    assert!(ok && out.contains(&id1), "{out}");
    let (ok, out, _) = file.keys(&url, &[], &["revoke", &id2]);
    assert!(ok && out.contains(&id2), "{out}");
    let (_, list, _) = file.keys(&url, &[], &["list"]);
    assert!(!list.contains(&id1) && !list.contains(&id2), "{list}");
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_instance_within_two_seconds() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let url = server.url();
    let (key, id) = file.create_key(&url, &[], "bulk", "soon-gone");
    let apps = [file.spawn(&url).await, file.spawn(&url).await];
    for app in &apps {
        // Each instance has looked the key up (and cached it).
        assert_eq!(
            post(app, "198.51.100.1", Some(("bearer", &key)))
                .await
                .status(),
            201
        );
    }
    let (ok, _, err) = file.keys(&url, &[], &["revoke", &id]);
    assert!(ok, "{err}");
    let revoked = Instant::now();
    for app in &apps {
        loop {
            let status = post(app, "198.51.100.1", Some(("bearer", &key)))
                .await
                .status();
            if status == 401 {
                break;
            }
            assert_eq!(status, 201);
            assert!(
                revoked.elapsed() < Duration::from_secs(2),
                "still accepted after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(revoked.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_shadow_policy_never_denies_and_its_would_deny_decisions_are_counted() {
    let server = Server::start();
    let file = PolicyFile::new(
        "[policies]\nmain = { limit = 100, window = \"1m\" }\n\
         probe = { limit = 2, window = \"1m\", shadow = true }\n\
         [tiers.anonymous]\ningest = [\"main\", \"probe\"]\n",
    );
    let app = file.spawn(&server.url()).await;
    for i in 0..5 {
        let resp = post(&app, "198.51.100.3", None).await;
        assert_eq!(resp.status(), 201, "request {i}");
        assert_eq!(
            header(&resp, "ratelimit-policy").as_deref(),
            Some("\"main\";q=100;w=60")
        );
        assert_eq!(
            header(&resp, "ratelimit").unwrap(),
            format!("\"main\";r={};t=60", 99 - i)
        );
    }
    let metrics = app.prometheus().await;
    for line in [
        "tally_ratelimit_decisions_total{policy=\"main\",outcome=\"allowed\"} 5",
        "tally_ratelimit_decisions_total{policy=\"probe\",outcome=\"allowed\"} 2",
        "tally_ratelimit_decisions_total{policy=\"probe\",outcome=\"shadow_denied\"} 3",
        "tally_ratelimit_decisions_total{policy=\"main\",outcome=\"denied\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn read_limits_are_their_own_budget() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let app = file.spawn(&server.url()).await;
    let (key, _) = file.create_key(&server.url(), &[], "pro", "reader");
    for i in 0..2 {
        let resp = summary(&app, Some(&key)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "ratelimit-policy").as_deref(),
            Some("\"reads\";q=2;w=60")
        );
        assert_eq!(
            header(&resp, "ratelimit").unwrap(),
            format!("\"reads\";r={};t=60", 1 - i)
        );
    }
    let resp = summary(&app, Some(&key)).await;
    assert_eq!(resp.status(), 429);
    let (_, body) = json(resp).await;
    assert_eq!(body["policy"], "reads");
    // The ingest budget was never touched by the reads, and reads of the anonymous tier are
    // not limited (no headers).
    let resp = post(&app, "198.51.100.1", Some(("x-api-key", &key))).await;
    assert_eq!(resp.status(), 201);
    assert!(header(&resp, "ratelimit")
        .unwrap()
        .starts_with("\"burst\";r=2;"));
    let resp = summary(&app, None).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "ratelimit").is_none());
    for path in ["/api/metrics/types", "/api/metrics/series?metric_type=cpu"] {
        let resp = get_with_key(&app, path, &key).await;
        assert_eq!(resp.status(), 429, "{path} shares the read budget");
    }
}

#[tokio::test]
async fn a_tier_limit_is_exact_across_two_instances_under_concurrent_requests() {
    let server = Server::start();
    let file = PolicyFile::new(
        "[policies]\nten = { limit = 10, window = \"1m\" }\nbig = { limit = 1000, window = \"1h\" }\n\
         [tiers.anonymous]\n[tiers.team]\ningest = [\"ten\", \"big\"]\n",
    );
    let (key, _) = file.create_key(&server.url(), &[], "team", "fleet");
    let apps = [
        file.spawn(&server.url()).await,
        file.spawn(&server.url()).await,
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app_base = apps[i % 2].base.clone();
        let client = apps[i % 2].client.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{app_base}/api/metrics"))
                .header("content-type", "application/json")
                .header("x-forwarded-for", format!("198.51.100.{i}"))
                .header("authorization", format!("Bearer {key}"))
                .body(metric("cpu"))
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        30,
        "{statuses:?}"
    );
    assert_eq!(tally_tests::api::stored_count(&server, "cpu"), 10);
}

#[tokio::test]
async fn limits_check_answers_allowed_denied_peek_cost_zero_and_isolates_keys() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let app = file.spawn(&server.url()).await;
    let (k1, _) = file.create_key(&server.url(), &[], "bulk", "svc-1");
    let (k2, _) = file.create_key(&server.url(), &[], "bulk", "svc-2");
    let ask = |cost: u64, peek: bool| json!({"subject": "user-42", "policies": ["burst", "hour"], "cost": cost, "peek": peek});

    let resp = limits_check(&app, Some(&k1), ask(1, false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "ratelimit-policy").as_deref(),
        Some("\"burst\";q=3;w=10, \"hour\";q=1000;w=3600")
    );
    assert_eq!(
        header(&resp, "ratelimit").as_deref(),
        Some("\"burst\";r=2;t=10, \"hour\";r=999;t=3600")
    );
    let (_, body) = json(resp).await;
    assert_eq!(body["allowed"], true);
    assert_eq!(body["policy"], "burst");
    assert_eq!(
        (body["limit"].as_i64(), body["remaining"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(body["retry_after_ms"], 0);
    assert_eq!(body["policies"][1]["name"], "hour");
    assert_eq!(body["policies"][1]["remaining"], 999);
    let reset = body["policies"][1]["reset_after_ms"].as_i64().unwrap();
    assert!((3_599_000..=3_600_000).contains(&reset), "{reset}");

    // Peek and cost 0 record nothing.
    for (cost, peek) in [(1, true), (0, false), (2, true)] {
        let (_, body) = json(limits_check(&app, Some(&k1), ask(cost, peek)).await).await;
        assert_eq!(body["allowed"], true, "cost {cost} peek {peek}");
        let remaining_after = if peek { 2 - cost as i64 } else { 2 };
        assert_eq!(body["policies"][0]["remaining"], remaining_after, "{body}");
    }
    // Two more, then denied (still 200).
    for _ in 0..2 {
        assert_eq!(
            json(limits_check(&app, Some(&k1), ask(1, false)).await)
                .await
                .1["allowed"],
            true
        );
    }
    let resp = limits_check(&app, Some(&k1), ask(1, false)).await;
    assert_eq!(resp.status(), 200);
    let (_, body) = json(resp).await;
    assert_eq!(body["allowed"], false);
    assert_eq!(body["policy"], "burst");
    let retry = body["retry_after_ms"].as_i64().unwrap();
    assert!((1..=10_000).contains(&retry), "{retry}");

    // Another calling key has its own budget for the same subject.
    let (_, body) = json(limits_check(&app, Some(&k2), ask(1, false)).await).await;
    assert_eq!(body["allowed"], true);
    assert_eq!(body["remaining"], 2);

    // Unknown and shadow policies are 422; no key or a bad key is 401.
    let (status, body) = json(
        limits_check(
            &app,
            Some(&k1),
            json!({"subject": "u", "policies": ["nope"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("unknown policy \"nope\""));
    let (status, _) = json(
        limits_check(
            &app,
            Some(&k1),
            json!({"subject": "u", "policies": ["probe"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(limits_check(&app, None, ask(1, false)).await.status(), 401);
    assert_eq!(
        limits_check(&app, Some("bad"), ask(1, false))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn without_a_policy_file_limits_check_is_401_and_key_headers_change_nothing() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let resp = limits_check(
        &app,
        Some("anything"),
        json!({"subject": "u", "policies": ["default"]}),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let resp = post(&app, "198.51.100.1", Some(("bearer", "anything"))).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "ratelimit").as_deref(),
        Some("\"default\";r=4;t=60")
    );
}

#[tokio::test]
async fn the_readme_acl_user_serves_keyed_requests_and_limits_check() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    // Keys are written by an administrative user (the CLI), read by the API's ACL user.
    let (key, _) = file.create_key(&server.url(), &[], "pro", "acl");
    let mut c = server.conn();
    let words = tally_tests::tls::readme_acl_words("s3cret-pw");
    server
        .run(
            &mut c,
            &words.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .expect("the README's ACL line");
    let url = format!("redis://tally-api:s3cret-pw@127.0.0.1:{}", server.port);
    let api = tally_tests::api::ApiProc::start(&url, &[("POLICY_FILE", file.path.as_str())]);
    let http = tally_tests::http::client();
    let base = api.base();
    let post = http
        .post(format!("{base}/api/metrics"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(metric("cpu"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 201, "{}", api.log());
    let read = http
        .get(format!("{base}/api/metrics/summary?metric_type=cpu"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    for peek in [true, false] {
        let resp = http
            .post(format!("{base}/api/limits/check"))
            .header("content-type", "application/json")
            .header("x-api-key", &key)
            .body(json!({"subject": "s", "policies": ["hour"], "peek": peek}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "peek {peek}: {}", api.log());
    }
    let bad = http
        .post(format!("{base}/api/metrics"))
        .header("content-type", "application/json")
        .header("x-api-key", "unknown")
        .body(metric("cpu"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    // The user cannot write key records.
    let mut as_api = tally_tests::redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let denied: Result<i64, _> = tally_tests::redis::cmd("HSET")
        .arg("tally:apikey:00")
        .arg("tier")
        .arg("pro")
        .query(&mut as_api);
    assert!(denied.is_err());
}

#[test]
fn a_bad_policy_file_stops_start_up_naming_the_file_the_line_and_the_field() {
    let file = PolicyFile::new(
        "[policies]\nburst = { limit = 10, window = \"1s\" }\nhour = { limit = 0, window = \"1h\" }\n\
         [tiers.anonymous]\ningest = [\"burst\"]\n",
    );
    let out = std::process::Command::new(tally_tests::api_path())
        .env_clear()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("PORT", tally_tests::free_port().to_string())
        .env("POLICY_FILE", &file.path)
        .output()
        .expect("run tally-api");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "invalid POLICY_FILE: {}:3: policies.hour.limit: must be an integer from 1",
            file.path
        )),
        "{err}"
    );
    let missing = std::process::Command::new(tally_tests::api_path())
        .env_clear()
        .env("POLICY_FILE", "/nonexistent/policies.toml")
        .output()
        .expect("run tally-api");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/policies.toml"));
}
