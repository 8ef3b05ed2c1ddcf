//! WAIT never blocks reads in cluster mode either (SPEC §11): with `REDIS_WAIT_REPLICAS` above
//! the replicas each primary has, every write waits the whole `REDIS_WAIT_TIMEOUT_MS`, yet
//! summaries, series and `/health`, sent meanwhile, answer 200 at once: the WAIT pipelines go
//! on a cluster connection of their own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_api::config::Config;
use tally_tests::api::{config, metric, post_body, TestApp};
use tally_tests::cluster::Cluster;
use tally_tests::load::until;

const WRITERS: usize = 16;
/// A generous bound on a read that queues behind nothing.
const READ_BOUND: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_cluster_mode_reads_and_health_answer_at_once_while_writes_wait_for_missing_replicas() {
    let cluster = Cluster::start();
    // One replica per primary: WAIT 2 can never be satisfied.
    let app = TestApp::spawn_with(Config {
        redis_cluster: true,
        redis_urls: cluster.seed_urls(),
        redis_wait_replicas: 2,
        redis_wait_timeout_ms: 2000,
        rate_limit: 1_000_000,
        ..config("redis://127.0.0.1:1")
    })
    .await;
    let kinds: Vec<String> = (0..WRITERS).map(|i| format!("w{i:02}")).collect();

    let stop = Arc::new(AtomicBool::new(false));
    // Writes sent so far (counted as they leave, before their WAIT).
    let sent = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for kind in kinds.clone() {
        let (stop, sent, http, base) = (
            stop.clone(),
            sent.clone(),
            app.client.clone(),
            app.base.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let resp = post_body(&http, &base, metric(&kind))
                    .send()
                    .await
                    .expect("POST");
                answered.push((resp.status().as_u16(), started.elapsed()));
            }
            answered
        }));
    }
    // Every writer has its first write out (each then waits about 2 s in WAIT).
    until(
        "every writer sent its first write",
        Duration::from_secs(10),
        || match sent.load(Ordering::Relaxed) {
            n if n >= WRITERS => Ok(()),
            n => Err(n),
        },
    )
    .await;
    let mut slowest = Duration::ZERO;
    for round in 0..15 {
        let kind = &kinds[round % WRITERS];
        for (label, path) in [
            (
                "summary",
                format!("/api/metrics/summary?metric_type={kind}"),
            ),
            ("series", format!("/api/metrics/series?metric_type={kind}")),
            ("health", "/health".to_string()),
        ] {
            let started = Instant::now();
            let resp = app.get(&path).await;
            let took = started.elapsed();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, 200, "{label} (round {round}): {body}");
            assert!(took < READ_BOUND, "{label} (round {round}) took {took:?}");
            slowest = slowest.max(took);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.expect("writer"));
    }
    assert!(!writes.is_empty());
    for (status, took) in &writes {
        assert_eq!(*status, 503, "no write can be acknowledged by 2 replicas");
        assert!(
            *took >= Duration::from_millis(1900),
            "a write took {took:?}"
        );
    }
    eprintln!("reads: slowest {slowest:?}; {} writes", writes.len());
}
