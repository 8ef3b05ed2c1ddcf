//! The type index in cluster mode (SPEC §6, §11): one key (`tally:types`) on one shard lists
//! the types of every shard: those stored before the index existed (built once by a SCAN of
//! every primary) and those written through the API since; `MAX_TYPES` holds across shards.

use std::collections::BTreeSet;

use tally_api::config::Config;
use tally_tests::api::{config, metric, TestApp};
use tally_tests::cluster::Cluster;
use tally_tests::http::json;
use tally_tests::redis::{self, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_type_index_covers_every_shard_and_caps_types_across_them() {
    let cluster = Cluster::start();
    // Series stored before the API (and its index) existed, on every primary.
    let old: Vec<String> = (0..12).map(|i| format!("old{i:02}")).collect();
    let mut cc = cluster.conn();
    for kind in &old {
        let _: Value = redis::cmd("METRIC.ADD")
            .arg(format!("metric:{kind}"))
            .arg(1)
            .query(&mut cc)
            .expect("METRIC.ADD");
    }
    let shards: BTreeSet<u16> = old
        .iter()
        .map(|k| cluster.primary_for_key(&format!("metric:{k}")))
        .collect();
    assert_eq!(shards.len(), 3, "the old series span every primary");

    let app = TestApp::spawn_with(Config {
        redis_cluster: true,
        redis_urls: cluster.seed_urls(),
        rate_limit: 1000,
        max_types: 20,
        ..config("redis://127.0.0.1:1")
    })
    .await;
    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({ "types": old }));

    // New types through the API, on every shard, up to the cap (12 old + 8 new = 20).
    let new: Vec<String> = (0..8).map(|i| format!("new{i:02}")).collect();
    for kind in &new {
        let (status, body) = json(app.post_metric(&metric(kind)).await).await;
        assert_eq!(status, 201, "{kind}: {body}");
    }
    let (status, body) = json(app.post_metric(&metric("one-too-many")).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("MAX_TYPES"));
    let batch = format!("[{},{}]", metric("new00"), metric("another"));
    let (status, _) = json(app.post_batch(&batch).await).await;
    assert_eq!(status, 422);
    // Known types still go through.
    let batch = format!("[{},{}]", metric("new00"), metric("old05"));
    let (status, body) = json(app.post_batch(&batch).await).await;
    assert_eq!(status, 201, "{body}");

    let mut all: Vec<String> = old.iter().chain(&new).cloned().collect();
    all.sort();
    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "types": all }));
    let members: i64 = redis::cmd("SCARD")
        .arg("tally:types")
        .query(&mut cc)
        .expect("SCARD");
    assert_eq!(members, 20);
    let stored: i64 = redis::cmd("EXISTS")
        .arg("metric:one-too-many")
        .query(&mut cc)
        .expect("EXISTS");
    assert_eq!(stored, 0, "nothing stored beyond the cap");
}
