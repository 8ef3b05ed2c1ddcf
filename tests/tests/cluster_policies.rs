//! Rate-limit policies on a real 3+3 Redis Cluster: keys created, used and revoked through the
//! cluster client, a keyed tier's limits exact across two API instances, and
//! `/api/limits/check` on subjects spread over every shard.

use std::collections::BTreeSet;

use serde_json::json;
use tally_api::config::Config;
use tally_tests::api::metric;
use tally_tests::cluster::Cluster;
use tally_tests::http::json;
use tally_tests::policies::{get_with_key, PolicyFile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_keys_and_limits_check_work_across_shards() {
    let cluster = Cluster::start();
    let file = PolicyFile::new(
        "[policies]\nsix = { limit = 6, window = \"1m\" }\nday = { limit = 1000, window = \"1d\" }\n\
         [tiers.anonymous]\n[tiers.team]\ningest = [\"six\", \"day\"]\n",
    );
    let seeds = cluster.seed_urls().join(",");
    let cluster_env = [("REDIS_CLUSTER", "true")];
    let (key, id) = file.create_key(&seeds, &cluster_env, "team", "fleet");
    let (other, _) = file.create_key(&seeds, &cluster_env, "team", "other");
    let (ok, list, err) = file.keys(&seeds, &cluster_env, &["list"]);
    assert!(ok && list.contains(&id), "{list}{err}");

    let config = || Config {
        redis_cluster: true,
        redis_urls: cluster.seed_urls(),
        ..file.config("redis://127.0.0.1:1")
    };
    let apps = [
        tally_tests::api::TestApp::spawn_with(config()).await,
        tally_tests::api::TestApp::spawn_with(config()).await,
    ];
    let mut statuses = Vec::new();
    for i in 0..10 {
        let app = &apps[i % 2];
        let resp = app
            .client
            .post(format!("{}/api/metrics", app.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(metric("cpu"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 201, 201, 201, 429, 429, 429, 429]);

    // Subjects on every shard, each its own budget under the calling key.
    let subjects: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    let shards: BTreeSet<u16> = subjects
        .iter()
        .map(|s| cluster.primary_for_key(&format!("ratelimit:svc:{id}:{s}")))
        .collect();
    assert_eq!(shards.len(), 3, "the subjects span every primary");
    for s in &subjects {
        for expected in [5, 4] {
            let resp = apps[0]
                .client
                .post(format!("{}/api/limits/check", apps[0].base))
                .header("content-type", "application/json")
                .header("x-api-key", &key)
                .body(json!({"subject": s, "policies": ["six"]}).to_string())
                .send()
                .await
                .unwrap();
            let (status, body) = json(resp).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["remaining"], expected, "{s}: {body}");
        }
    }
    // The other key's budget for the same subject is whole.
    let resp = apps[1]
        .client
        .post(format!("{}/api/limits/check", apps[1].base))
        .header("content-type", "application/json")
        .header("x-api-key", &other)
        .body(json!({"subject": "user-0", "policies": ["six"], "peek": true}).to_string())
        .send()
        .await
        .unwrap();
    let (_, body) = json(resp).await;
    assert_eq!(body["remaining"], 5, "{body}");

    // Revoked through the cluster: refused by both instances within 2 s.
    let (ok, _, err) = file.keys(&seeds, &cluster_env, &["revoke", "fleet"]);
    assert!(ok, "{err}");
    let revoked = std::time::Instant::now();
    for app in &apps {
        loop {
            let resp = get_with_key(app, "/api/metrics/types", &key).await;
            if resp.status() == 401 {
                break;
            }
            assert!(revoked.elapsed() < std::time::Duration::from_secs(2));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
