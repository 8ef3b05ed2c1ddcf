//! Limits are exact across API processes (SPEC §6): three `tally-api` processes share one
//! Redis, one client hammers all of them at once, and exactly `RATE_LIMIT` requests get through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_tests::api::{post_metric, ApiProc};
use tally_tests::http::{client, send, REQUEST_BOUND};
use tally_tests::load::Seen;
use tally_tests::{field_f64, Server};

const LIMIT: usize = 50;
const PROCESSES: usize = 3;
const TASKS: usize = 8;
const REQUESTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_api_processes_let_exactly_the_limit_through_for_one_client() {
    let started = Instant::now();
    let server = Server::start();
    let limit = LIMIT.to_string();
    let env = [("RATE_LIMIT", limit.as_str()), ("RATE_WINDOW", "60")];
    let apis: Vec<ApiProc> = (0..PROCESSES)
        .map(|_| ApiProc::start(&server.url(), &env))
        .collect();
    let bases: Arc<Vec<String>> = Arc::new(apis.iter().map(|a| a.base()).collect());

    let seen = Seen::shared();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (seen, next, bases) = (seen.clone(), next.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS {
                    break;
                }
                // Round-robin over the processes, so each sees a third of the traffic.
                let base = &bases[i % bases.len()];
                let req = post_metric(&http, base, "exact", i as i64);
                let outcome = send(req).await;
                if let Ok(r) = &outcome {
                    r.json(); // every answer is JSON
                }
                seen.lock().unwrap().record("post", &outcome);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }

    let seen = seen.lock().unwrap();
    seen.assert_only(&[("post", &[201, 429])], REQUEST_BOUND);
    let statuses = seen.of("post");
    assert_eq!(seen.total, REQUESTS);
    assert_eq!(
        statuses.get(&201).copied().unwrap_or(0),
        LIMIT,
        "exactly RATE_LIMIT acknowledged across {PROCESSES} processes: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0),
        REQUESTS - LIMIT,
        "{statuses:?}"
    );

    let mut c = server.conn();
    let v = server
        .run(&mut c, &["METRIC.SUMMARY", "metric:exact"])
        .expect("METRIC.SUMMARY");
    assert_eq!(field_f64(&v, "count"), Some(LIMIT as f64), "{v:?}");
    eprintln!(
        "{REQUESTS} requests over {PROCESSES} processes x {TASKS} tasks: {statuses:?}, \
         stored {LIMIT}, slowest {:?}, took {:.1}s",
        seen.slowest,
        started.elapsed().as_secs_f64()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
