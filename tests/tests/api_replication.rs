//! REDIS_WAIT_REPLICAS: a write is acknowledged (201) only after `WAIT n` on the connection that
//! wrote it confirms n replicas; otherwise 503 (it may or may not have been stored).

use std::time::Duration;

use tally_api::config::Config;
use tally_tests::api::{config, stored_count, TestApp, EXAMPLE};
use tally_tests::http::json;
use tally_tests::{wait_until, Flavor, Server, ServerConfig};

fn waiting_for(server: &Server, replicas: u32) -> Config {
    Config {
        redis_wait_replicas: replicas,
        redis_wait_timeout_ms: 200,
        ..config(&server.url())
    }
}

#[tokio::test]
async fn a_write_no_replica_confirms_is_answered_503() {
    let server = Server::start();
    let app = TestApp::spawn_with(waiting_for(&server, 1)).await;
    let (status, body) = json(app.post_metric(EXAMPLE).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("replica"),
        "{body}"
    );
}

#[tokio::test]
async fn a_write_a_replica_confirms_is_answered_201_and_is_on_the_replica() {
    let primary = Server::start();
    let mut cfg = ServerConfig::new(Flavor::Redis);
    cfg.args = vec![
        "--replicaof".to_string(),
        "127.0.0.1".to_string(),
        primary.port.to_string(),
    ];
    let replica = cfg.start();
    let mut c = replica.conn();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let info = replica.run(&mut c, &["INFO", "replication"]).unwrap();
            tally_tests::text(&info).contains("master_link_status:up")
        }),
        "the replica did not sync"
    );
    let app = TestApp::spawn_with(waiting_for(&primary, 1)).await;
    let (status, body) = json(app.post_metric(EXAMPLE).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        stored_count(&replica, "cpu"),
        1,
        "acknowledged means replicated"
    );
}
