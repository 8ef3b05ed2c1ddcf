//! With `appendfsync always`, nothing the API acknowledged is lost when Redis is SIGKILLed under
//! load and restarted (SPEC §6): every request writes its own metric type, so each 201 is
//! checked individually afterwards. The API keeps answering (503, never 500) while Redis is
//! down and recovers without a restart.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_tests::api::{post_metric, ApiProc};
use tally_tests::http::{client, send, REQUEST_BOUND};
use tally_tests::load::{until, Seen};
use tally_tests::redis::Value;
use tally_tests::{field_f64, Flavor, ServerConfig};

const TASKS: usize = 4;
/// Bound on each phase of the load (each ends as soon as what it waits for is seen).
const PHASE_BOUND: Duration = Duration::from_secs(20);
/// Upper bound on requests, whatever the timing.
const MAX_REQUESTS: usize = 6000;

// Phases of the run. A /health answer is held to its phase only if it was sent and received
// in that same phase (else it is "health-mixed"): the switches race with requests in flight.
const BEFORE: u8 = 0;
/// Set just before the kill.
const KILLING: u8 = 1;
/// Set once the process is dead, until just before the restart.
const OUTAGE: u8 = 2;
/// Set just before the restart.
const AFTER: u8 = 3;

/// How many POSTs sent in `phase` were answered `status`.
fn count_of(answered: &Mutex<Vec<(usize, u8, u16)>>, phase: u8, status: u16) -> usize {
    answered
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p, s)| *p == phase && *s == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_when_redis_is_killed_and_restarted_with_appendfsync_always() {
    let started = Instant::now();
    let mut server = ServerConfig::new(Flavor::Redis)
        .arg("--appendonly", "yes")
        .arg("--appendfsync", "always")
        .start();
    let api = ApiProc::start(&server.url(), &[("RATE_LIMIT", "1000000000")]);
    let base = api.base();

    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(1));
    let seen = Seen::shared();
    // (value, phase when sent, status) of every answered POST.
    let answered: Arc<Mutex<Vec<(usize, u8, u16)>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (phase, stop, next, seen, answered, base) = (
            phase.clone(),
            stop.clone(),
            next.clone(),
            seen.clone(),
            answered.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i > MAX_REQUESTS {
                    break;
                }
                let sent_in = phase.load(Ordering::Relaxed);
                let req = post_metric(&http, &base, &format!("v{i}"), i as i64);
                let outcome = send(req).await;
                if let Ok(r) = &outcome {
                    r.json();
                    answered.lock().unwrap().push((i, sent_in, r.status));
                }
                seen.lock().unwrap().record("post", &outcome);
                // A 503 comes back at once while Redis is down (the API dials again on every
                // request, without back-off): pace the retries so the outage does not use up
                // MAX_REQUESTS before Redis returns.
                if outcome.as_ref().map_or(true, |r| r.status == 503) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    // /health, every 50 ms, labelled by phase.
    let health = {
        let (phase, stop, seen, base) = (phase.clone(), stop.clone(), seen.clone(), base.clone());
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let p = phase.load(Ordering::Relaxed);
                let outcome = send(http.get(format!("{base}/health"))).await;
                if let Ok(r) = &outcome {
                    r.json();
                }
                let label = if phase.load(Ordering::Relaxed) == p {
                    format!("health-{p}")
                } else {
                    "health-mixed".to_string()
                };
                seen.lock().unwrap().record(&label, &outcome);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Before: writes acknowledged and /health 200, both seen in this phase.
    until(
        "writes acknowledged and /health 200 before the kill",
        PHASE_BOUND,
        || {
            let acked = count_of(&answered, BEFORE, 201);
            let health = seen.lock().unwrap().count("health-0", 200);
            if acked >= 20 && health >= 1 {
                Ok(())
            } else {
                Err((acked, health))
            }
        },
    )
    .await;
    phase.store(KILLING, Ordering::Relaxed);
    tokio::task::block_in_place(|| server.kill());
    phase.store(OUTAGE, Ordering::Relaxed);
    let killed_at = Instant::now();
    // The outage: 503s to writes and /health 503, both seen while Redis is dead.
    until(
        "503s to writes and /health 503 during the outage",
        PHASE_BOUND,
        || {
            let refused = count_of(&answered, OUTAGE, 503);
            let health = seen.lock().unwrap().count("health-2", 503);
            if refused >= 20 && health >= 2 {
                Ok(())
            } else {
                Err((refused, health))
            }
        },
    )
    .await;
    phase.store(AFTER, Ordering::Relaxed);
    tokio::task::block_in_place(|| server.restart());
    let outage = killed_at.elapsed();
    // Keep posting until the API has acknowledged writes again for a while and the /health
    // poller (every 50 ms) has answered within the recovered phase: 100 POSTs alone can finish
    // before it polls at all.
    until(
        "100 writes acknowledged and /health 200 after the restart",
        PHASE_BOUND,
        || {
            let acked = count_of(&answered, AFTER, 201);
            let health = seen.lock().unwrap().count("health-3", 200);
            if acked >= 100 && health >= 1 {
                Ok(())
            } else {
                Err((acked, health))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    health.await.expect("health task");

    let seen = seen.lock().unwrap();
    seen.assert_only(
        &[
            ("post", &[201, 503]),
            ("health-0", &[200]),
            ("health-1", &[200, 503]),
            ("health-2", &[503]),
            ("health-3", &[200, 503]),
            ("health-mixed", &[200, 503]),
        ],
        REQUEST_BOUND,
    );
    assert!(
        seen.of("health-2").contains_key(&503),
        "/health said 503 during the outage"
    );
    assert!(
        seen.of("health-3").contains_key(&200),
        "/health said 200 after recovery"
    );

    let answered = answered.lock().unwrap().clone();
    let count = |p: u8, s: u16| {
        answered
            .iter()
            .filter(|(_, ph, st)| *ph == p && *st == s)
            .count()
    };
    assert!(count(BEFORE, 201) > 0, "writes before the kill");
    assert!(count(OUTAGE, 503) > 0, "503s during the outage");
    assert!(count(AFTER, 201) >= 100, "recovered without an API restart");

    // Every acknowledged value is there, exactly once; unacknowledged ones at most once.
    let mut conn = server.conn();
    let mut pipe = tally_tests::redis::pipe();
    for (i, _, _) in &answered {
        pipe.cmd("METRIC.SUMMARY").arg(format!("metric:v{i}"));
    }
    let replies: Vec<Value> = pipe.query(&mut conn).expect("METRIC.SUMMARY pipeline");
    let (mut acked, mut lost, mut unacked_stored) = (0, Vec::new(), 0);
    for ((i, _, status), v) in answered.iter().zip(&replies) {
        let n = field_f64(v, "count").unwrap_or(0.0);
        assert!(n <= 1.0, "v{i} stored {n} times");
        if *status == 201 {
            acked += 1;
            if n != 1.0 || field_f64(v, "sum") != Some(*i as f64) {
                lost.push(*i);
            }
        } else if n == 1.0 {
            unacked_stored += 1;
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    eprintln!(
        "{} POSTs ({acked} acknowledged, all kept; {unacked_stored} of the 503s stored anyway), \
         statuses {:?}, health {:?}/{:?}/{:?}, outage {:.1}s, slowest {:?}, took {:.1}s",
        answered.len(),
        seen.of("post"),
        seen.of("health-0"),
        seen.of("health-2"),
        seen.of("health-3"),
        outage.as_secs_f64(),
        seen.slowest,
        started.elapsed().as_secs_f64()
    );
    drop(api);
}
