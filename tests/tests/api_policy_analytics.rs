//! Rate-limit policies (SPEC section 8) in the limiter analytics (SPEC section 10): every
//! decision of every policy of the policy file, shadow would-denies included, is in
//! `GET /api/ratelimit/decisions` under the policy's own name, and a denied API key is listed
//! in `GET /api/ratelimit/top` by its name.

use std::time::{Duration, Instant};

use tally_tests::api::{metric, TestApp};
use tally_tests::http::json;
use tally_tests::policies::PolicyFile;
use tally_tests::Server;

const FILE: &str = r#"
[policies]
main  = { limit = 4,   window = "1m" }
probe = { limit = 2,   window = "1m", shadow = true }
wide  = { limit = 100, window = "1h" }

[tiers.anonymous]
ingest = ["main", "probe"]

[tiers.pro]
ingest = ["wide", "main"]
"#;

async fn post(app: &TestApp, ip: &str, key: Option<&str>) -> u16 {
    let mut req = app
        .client
        .post(format!("{}/api/metrics", app.base))
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(metric("cpu"));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.expect("POST").status().as_u16()
}

/// The decisions of the last 15 minutes, per policy and outcome, summed over the buckets.
async fn decisions(app: &TestApp) -> serde_json::Value {
    let resp = app
        .client
        .get(format!(
            "{}/api/ratelimit/decisions?window=900&bucket=10",
            app.base
        ))
        .send()
        .await
        .expect("GET decisions");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn sum(body: &serde_json::Value, policy: &str, outcome: &str) -> u64 {
    body["policies"][policy][outcome]
        .as_array()
        .map_or(0, |points| {
            points.iter().filter_map(|p| p[1].as_u64()).sum()
        })
}

#[tokio::test]
async fn every_policy_s_decisions_and_shadow_would_denies_reach_the_limiter_analytics() {
    let server = Server::start();
    let file = PolicyFile::new(FILE);
    let app = file.spawn(&server.url()).await;
    // Anonymous: 4 allowed by `main` (the shadow `probe` would have denied 2 of them), then 2
    // denied by `main` (not shown to the shadow policy).
    let mut statuses = vec![];
    for _ in 0..6 {
        statuses.push(post(&app, "198.51.100.7", None).await);
    }
    assert_eq!(statuses, [201, 201, 201, 201, 429, 429]);
    // A keyed tier of two policies: 4 allowed by both, then 1 denied by `main`.
    let (key, _) = file.create_key(&server.url(), &[], "pro", "ci-job");
    let mut statuses = vec![];
    for _ in 0..5 {
        statuses.push(post(&app, "198.51.100.8", Some(&key)).await);
    }
    assert_eq!(statuses, [201, 201, 201, 201, 429]);

    let want = [
        ("main", "allowed", 8),
        ("main", "denied", 3),
        ("main", "shadow_denied", 0),
        ("probe", "allowed", 2),
        ("probe", "shadow_denied", 2),
        ("probe", "denied", 0),
        ("wide", "allowed", 4),
        ("wide", "denied", 0),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let body = decisions(&app).await;
        let seen: Vec<u64> = want.iter().map(|(p, o, _)| sum(&body, p, o)).collect();
        let expected: Vec<u64> = want.iter().map(|w| w.2).collect();
        if seen == expected {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "decisions never matched {want:?}: {seen:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for policy in ["main", "probe", "wide"] {
        assert!(body["policies"].get(policy).is_some(), "{body}");
    }
    // The denied clients: the anonymous address and the key, by its name.
    let resp = app
        .client
        .get(format!(
            "{}/api/ratelimit/top?window=900&limit=10",
            app.base
        ))
        .send()
        .await
        .expect("GET top");
    let (status, top) = json(resp).await;
    assert_eq!(status, 200, "{top}");
    let mut clients: Vec<(String, u64)> = top
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["client"].as_str().unwrap().to_string(),
                e["denied"].as_u64().unwrap(),
            )
        })
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        [("198.51.100.7".to_string(), 2), ("ci-job".to_string(), 1)]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
}
