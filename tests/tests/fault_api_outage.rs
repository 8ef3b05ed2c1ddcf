//! Redis stopped for seconds under load on every endpoint (SPEC §2 "Redis down", §6): every
//! answer is a documented status (never 500), none is a reset or a hang, everything that needs
//! Redis says 503 while it is gone, and the same API process recovers when Redis returns.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_tests::api::{metric_body, now_rfc3339, post_metric, ApiProc};
use tally_tests::http::{client, send, REQUEST_BOUND};
use tally_tests::load::{until, until_seen, Seen, Shared};
use tally_tests::Server;

/// Upper bound on requests, whatever the timing.
const MAX_REQUESTS: usize = 20_000;

// A request is held to the outage only if it was sent and answered while Redis was dead.
const UP: u8 = 0;
const DOWN: u8 = 2;
const SWITCHING: u8 = 1;

/// (label, statuses allowed at any time, status while Redis is down).
const ENDPOINTS: &[(&str, &[u16], u16)] = &[
    ("post", &[201, 429, 503], 503),
    ("batch", &[201, 429, 503], 503),
    ("summary", &[200, 503], 503),
    ("series", &[200, 503], 503),
    ("types", &[200, 503], 503),
    ("health", &[200, 503], 503),
    ("external", &[200], 200),
];

fn request(http: &reqwest::Client, base: &str, label: &str, n: usize) -> reqwest::RequestBuilder {
    match label {
        "post" => post_metric(http, base, "load", n as i64),
        "batch" => {
            let items: Vec<String> = (0..3)
                .map(|k| metric_body(&format!("load{k}"), n as i64))
                .collect();
            http.post(format!("{base}/api/metrics/batch"))
                .header("content-type", "application/json")
                .body(format!("[{}]", items.join(",")))
        }
        "summary" if n.is_multiple_of(2) => http.get(format!(
            "{base}/api/metrics/summary?metric_type=load&window=60"
        )),
        "summary" => http.get(format!("{base}/api/metrics/summary?metric_type=load")),
        "series" => http.get(format!("{base}/api/metrics/series")).query(&[
            ("metric_type", "load"),
            ("bucket", "1"),
            ("to", &now_rfc3339()),
        ]),
        "types" => http.get(format!("{base}/api/metrics/types")),
        "health" => http.get(format!("{base}/health")),
        "external" => http.get(format!("{base}/external")),
        other => unreachable!("{other}"),
    }
}

/// Bound on each phase of the load (each ends as soon as what it waits for is seen).
const PHASE_BOUND: Duration = Duration::from_secs(20);

/// How many successful answers each label has had.
fn success_counts(seen: &Shared, labels: &[&str]) -> Vec<(String, usize)> {
    let seen = seen.lock().unwrap();
    labels
        .iter()
        .map(|l| {
            let n = seen
                .of(l)
                .iter()
                .filter(|(s, _)| success(l, **s))
                .map(|(_, n)| n)
                .sum();
            (l.to_string(), n)
        })
        .collect()
}

fn success(label: &str, status: u16) -> bool {
    match label {
        "post" | "batch" => status == 201,
        _ => status == 200,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_within_bounds_while_redis_is_down_and_recovers_without_a_restart() {
    let started = Instant::now();
    let mut server = Server::start();
    let mut api = ApiProc::start(&server.url(), &[("RATE_LIMIT", "1000000000")]);
    let base = api.base();

    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Seen::shared();
    let mut tasks = Vec::new();
    // Two clients on each endpoint.
    for &(label, _, _) in ENDPOINTS.iter().chain(ENDPOINTS) {
        let (phase, stop, sent, seen, base) = (
            phase.clone(),
            stop.clone(),
            sent.clone(),
            seen.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n >= MAX_REQUESTS {
                    break;
                }
                let p = phase.load(Ordering::Relaxed);
                let outcome = send(request(&http, &base, label, n)).await;
                if let Ok(r) = &outcome {
                    r.json(); // every answer, 503s included, is JSON
                }
                let strictly_down = p == DOWN && phase.load(Ordering::Relaxed) == DOWN;
                let label = if strictly_down {
                    format!("{label}@down")
                } else {
                    label.to_string()
                };
                seen.lock().unwrap().record(&label, &outcome);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let labels: Vec<&str> = ENDPOINTS.iter().map(|&(label, _, _)| label).collect();
    // Up: every endpoint has succeeded under the load.
    until(
        "every endpoint succeeded with Redis up",
        PHASE_BOUND,
        || {
            let counts = success_counts(&seen, &labels);
            if counts.iter().all(|(_, n)| *n > 0) {
                Ok(())
            } else {
                Err(counts)
            }
        },
    )
    .await;
    phase.store(SWITCHING, Ordering::Relaxed);
    tokio::task::block_in_place(|| server.kill());
    phase.store(DOWN, Ordering::Relaxed);
    let down_at = Instant::now();
    // Down: every endpoint has given its outage answer 20 times (some 300 requests in all),
    // each sent and answered while Redis was dead.
    for &(label, _, down) in ENDPOINTS {
        until_seen(&seen, &[&format!("{label}@down")], down, 20, PHASE_BOUND).await;
    }
    phase.store(SWITCHING, Ordering::Relaxed);
    let outage = down_at.elapsed();
    let before = success_counts(&seen, &labels);
    tokio::task::block_in_place(|| server.restart());
    phase.store(UP, Ordering::Relaxed);
    // Load continues while the API reconnects, until every endpoint has succeeded again.
    until(
        "every endpoint succeeded again under load",
        PHASE_BOUND,
        || {
            let now = success_counts(&seen, &labels);
            if now.iter().zip(&before).all(|(n, b)| n.1 > b.1) {
                Ok(())
            } else {
                Err((before.clone(), now))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }

    // Recovery: every endpoint succeeds again, same process.
    let recovered_at = Instant::now();
    let http = client();
    for &(label, _, _) in ENDPOINTS {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = send(request(&http, &base, label, 0))
                .await
                .unwrap_or_else(|e| panic!("{label} after recovery: {e}"));
            if success(label, r.status) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label} did not recover: {} {}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(api.is_running(), "the API process is still the same one");

    let seen = seen.lock().unwrap();
    let labels: Vec<(String, Vec<u16>)> = ENDPOINTS
        .iter()
        .flat_map(|&(label, any, down)| {
            [
                (label.to_string(), any.to_vec()),
                (format!("{label}@down"), vec![down]),
            ]
        })
        .collect();
    let allowed: Vec<(&str, &[u16])> = labels
        .iter()
        .map(|(l, s)| (l.as_str(), s.as_slice()))
        .collect();
    seen.assert_only(&allowed, REQUEST_BOUND);
    for &(label, _, down) in ENDPOINTS {
        let during = seen.of(&format!("{label}@down"));
        assert!(
            during.get(&down).copied().unwrap_or(0) > 0,
            "{label} was tried while Redis was down: {during:?}"
        );
    }
    eprintln!(
        "{} requests, outage {:.1}s, slowest {:?}, recovered check {:.1}s, took {:.1}s",
        seen.total,
        outage.as_secs_f64(),
        seen.slowest,
        recovered_at.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (label, statuses) in &seen.statuses {
        eprintln!("  {label}: {statuses:?}");
    }
}
