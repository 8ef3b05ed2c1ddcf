//! WAIT never blocks reads (SPEC §11, issue 14.5): with `REDIS_WAIT_REPLICAS=1`, a long
//! `REDIS_WAIT_TIMEOUT_MS` and no replica, every write waits the whole timeout (and answers
//! 503), yet summaries, series and `/health`, sent meanwhile, answer 200 at once: they never
//! queue behind a WAIT.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_tests::api::{now_rfc3339, post_metric, ApiProc};
use tally_tests::http::{client, send};
use tally_tests::Server;

const WRITERS: usize = 64;
const WAIT_TIMEOUT_MS: u64 = 2000;
/// A generous bound on a read that queues behind nothing (they take well under 10 ms).
const READ_BOUND: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_health_answer_at_once_while_64_writers_wait_for_a_missing_replica() {
    let server = Server::start();
    let api = ApiProc::start(
        &server.url(),
        &[
            ("RATE_LIMIT", "1000000000"),
            ("REDIS_WAIT_REPLICAS", "1"),
            ("REDIS_WAIT_TIMEOUT_MS", &WAIT_TIMEOUT_MS.to_string()),
            ("WORKERS", "2"),
        ],
    );
    let base = api.base();
    // A series to read (stored directly: no write through the API can be acknowledged).
    let mut c = server.conn();
    server
        .run(&mut c, &["METRIC.ADD", "metric:waited", "5"])
        .expect("METRIC.ADD");

    let stop = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Vec<(u16, Duration)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (stop, writes, base) = (stop.clone(), writes.clone(), base.clone());
        writers.push(tokio::spawn(async move {
            // A client of its own: its requests are not held up by another writer's.
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            while !stop.load(Ordering::Relaxed) {
                let r = send(post_metric(&http, &base, "waited", w as i64))
                    .await
                    .expect("a write is answered");
                writes.lock().unwrap().push((r.status, r.took));
            }
        }));
    }
    // Reads start once the writers are blocked in WAIT on the server.
    let mut c = server.conn();
    let blocked = tally_tests::wait_until(Duration::from_secs(10), || {
        let info = tally_tests::text(
            &server
                .run(&mut c, &["INFO", "clients"])
                .expect("INFO clients"),
        );
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|n| n >= 1)
    });
    assert!(blocked, "the writers are blocked in WAIT");

    let http = client();
    let reads = AtomicUsize::new(0);
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        for (label, req) in [
            (
                "summary",
                http.get(format!("{base}/api/metrics/summary?metric_type=waited")),
            ),
            (
                "series",
                http.get(format!("{base}/api/metrics/series")).query(&[
                    ("metric_type", "waited"),
                    ("bucket", "1"),
                    ("to", &now_rfc3339()),
                ]),
            ),
            ("health", http.get(format!("{base}/health"))),
        ] {
            let r = send(req).await.unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(r.status, 200, "{label} (round {round}): {}", r.body);
            assert!(
                r.took < READ_BOUND,
                "{label} (round {round}) took {:?} behind the WAITs",
                r.took
            );
            slowest = slowest.max(r.took);
            reads.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let writes = writes.lock().unwrap();
    // Writes are not acknowledged (no replica) and each one waited about the WAIT timeout:
    // they did wait, each on its own, not behind the others.
    assert!(!writes.is_empty());
    for (status, took) in writes.iter() {
        assert_eq!(*status, 503, "a write no replica confirmed");
        assert!(
            *took >= Duration::from_millis(WAIT_TIMEOUT_MS - 100) && *took < Duration::from_secs(5),
            "a write took {took:?}"
        );
    }
    eprintln!(
        "{} reads, slowest {slowest:?}; {} writes",
        reads.load(Ordering::Relaxed),
        writes.len()
    );
}
