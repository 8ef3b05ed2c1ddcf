//! Recovery after an outage is immediate on every actix worker (SPEC §2 "recovers by itself",
//! issue 13.3): once Redis has answered PING for 1 s, every request succeeds, whichever worker
//! takes it, whether that worker saw the outage (requests kept going) or slept through it (its
//! connection broke while idle).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_tests::api::{metric_body, now_rfc3339, ApiProc};
use tally_tests::http::{send, Reply, REQUEST_BOUND};
use tally_tests::Server;

/// Worker threads of the API under test: more than one, so connections are spread.
const WORKERS: &str = "4";
/// Requests sent after recovery, each on a new TCP connection (actix hands new connections to
/// its workers in turn, so every worker gets many of them).
const AFTER: usize = 200;

/// A client that opens a new connection for every request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_BOUND)
        .connect_timeout(REQUEST_BOUND)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// Request `n` of a mix of every endpoint that needs Redis (writes included: a write is never
/// retried, so it must find a live connection the first time).
fn request(
    http: &reqwest::Client,
    base: &str,
    n: usize,
) -> (&'static str, reqwest::RequestBuilder) {
    match n % 6 {
        0 => (
            "post",
            http.post(format!("{base}/api/metrics"))
                .header("content-type", "application/json")
                .body(metric_body("reconnect", n as i64)),
        ),
        1 => (
            "batch",
            http.post(format!("{base}/api/metrics/batch"))
                .header("content-type", "application/json")
                .body(format!(
                    "[{},{}]",
                    metric_body("reconnect", 1),
                    metric_body("reconnect2", 2)
                )),
        ),
        2 => (
            "summary",
            http.get(format!("{base}/api/metrics/summary?metric_type=reconnect")),
        ),
        3 => (
            "series",
            http.get(format!("{base}/api/metrics/series")).query(&[
                ("metric_type", "reconnect"),
                ("bucket", "1"),
                ("to", &now_rfc3339()),
            ]),
        ),
        4 => ("types", http.get(format!("{base}/api/metrics/types"))),
        _ => ("health", http.get(format!("{base}/health"))),
    }
}

fn succeeded(label: &str, r: &Reply) -> bool {
    match label {
        "post" | "batch" => r.status == 201,
        _ => r.status == 200,
    }
}

/// `AFTER` requests, 8 at a time, each on a new connection: every one must succeed.
async fn assert_all_succeed(base: &str) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, base) = (next.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            let http = fresh_client();
            let mut failed = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= AFTER {
                    return failed;
                }
                let (label, req) = request(&http, &base, n);
                match send(req).await {
                    Ok(r) if succeeded(label, &r) => {}
                    Ok(r) => failed.push(format!("{label}: {} {}", r.status, r.body)),
                    Err(e) => failed.push(format!("{label}: {e}")),
                }
            }
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.expect("client task"));
    }
    assert!(
        failed.is_empty(),
        "{} of {AFTER} requests failed 1 s after Redis answered again, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The API on `server` with every worker connected (see [`warm_up`]).
async fn start_warm(server: &Server) -> ApiProc {
    let api = ApiProc::start(
        &server.url(),
        &[("RATE_LIMIT", "1000000000"), ("WORKERS", WORKERS)],
    );
    warm_up(&api.base()).await;
    api
}

/// Every worker has a connection (and a WAIT-free write path) before the outage.
async fn warm_up(base: &str) {
    let http = fresh_client();
    for n in 0..40 {
        let (label, req) = request(&http, base, n);
        let r = send(req).await.expect("warm-up request");
        assert!(
            succeeded(label, &r),
            "warm-up {label}: {} {}",
            r.status,
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_8_s_outage_under_load_every_request_succeeds_1_s_after_redis_answers() {
    let mut server = Server::start();
    let api = start_warm(&server).await;
    let base = api.base();

    // Requests keep going through the outage (503s), on new connections, so every worker
    // meets the dead server again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for k in 0..4 {
        let (stop, during, base) = (stop.clone(), during.clone(), base.clone());
        load.push(tokio::spawn(async move {
            let http = fresh_client();
            let mut n = k;
            while !stop.load(Ordering::Relaxed) {
                let (_, req) = request(&http, &base, n);
                let r = send(req).await;
                assert!(
                    r.as_ref().is_ok_and(|r| r.status != 500),
                    "during the outage: {r:?}"
                );
                during.fetch_add(1, Ordering::Relaxed);
                n += 4;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::task::block_in_place(|| server.kill());
    // The outage's length is what this test is about (the contract's 8 s), not a wait for a
    // state: the load above meets the dead server all along.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // `restart` returns once the new process answers PING, on the same port.
    tokio::task::block_in_place(|| server.restart());
    let answered_at = Instant::now();
    // The contract's grace period, not a synchronisation: Redis has answered for 1 s (the
    // load goes on meanwhile, and during the checked requests).
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(answered_at.elapsed())).await;
    assert_all_succeed(&base).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    assert!(during.load(Ordering::Relaxed) > 100, "the load ran");
    drop(api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_broken_while_idle_are_replaced_before_the_next_request() {
    let mut server = Server::start();
    let api = start_warm(&server).await;
    let base = api.base();

    // No request at all while Redis is gone: each worker's connection breaks while idle.
    tokio::task::block_in_place(|| {
        server.shutdown();
        server.restart();
    });
    let answered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(answered_at.elapsed())).await;
    assert_all_succeed(&base).await;
    drop(api);
}
