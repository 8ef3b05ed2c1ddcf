//! Failover under the API in cluster mode (SPEC §6): one `tally-api` process with
//! `REDIS_CLUSTER=true` and `REDIS_WAIT_REPLICAS=1` writes several metric types while the
//! primary of one of them is SIGKILLed. During the failover every answer is 201 or 503 within
//! the bound, and everything acknowledged is on the new primaries. The promoted replica has no
//! replica of its own, so its writes stay 503 (WAIT 1 cannot be met: never a 201 that one more
//! crash would lose) until the killed node is restarted and rejoins as its replica; then the
//! same API process acknowledges writes of that type again, by itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_tests::api::{post_metric, ApiProc};
use tally_tests::cluster::Cluster;
use tally_tests::http::{client, send, REQUEST_BOUND};
use tally_tests::load::{until, Seen};
use tally_tests::redis::Value;
use tally_tests::{field_f64, redis};

const TYPES: &[&str] = &["cpu", "memory", "disk", "net", "gpu", "io"];
const VICTIM: &str = "cpu";
/// Upper bound on requests, whatever the timing.
const MAX_REQUESTS: usize = 30_000;

/// Bound on each phase of the load (each ends as soon as what it waits for is seen).
const PHASE_BOUND: Duration = Duration::from_secs(30);

/// Ok once every type has at least `n` acknowledged writes, else the counts.
fn acked_counts(acked: &Mutex<BTreeMap<&str, Vec<i64>>>, n: usize) -> Result<(), Vec<usize>> {
    let acked = acked.lock().unwrap();
    let counts: Vec<usize> = TYPES
        .iter()
        .map(|t| acked.get(t).map_or(0, Vec::len))
        .collect();
    if counts.iter().all(|c| *c >= n) {
        Ok(())
    } else {
        Err(counts)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_dies_under_load_and_nothing_acknowledged_is_lost() {
    let started = Instant::now();
    let mut cluster = tokio::task::block_in_place(Cluster::start);
    let seeds = cluster.seed_urls().join(",");
    let api = ApiProc::start(
        &seeds,
        &[
            ("REDIS_CLUSTER", "true"),
            ("REDIS_WAIT_REPLICAS", "1"),
            ("RATE_LIMIT", "1000000000"),
        ],
    );
    let base = api.base();
    let ready = Instant::now() + Duration::from_secs(15);
    while tally_tests::http::get_status(api.port, "/health") != Some(200) {
        assert!(Instant::now() < ready, "API not healthy:\n{}", api.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Seen::shared();
    // Per type: values acknowledged with 201 (value = request number, so the sum is checked).
    let acked: Arc<Mutex<BTreeMap<&str, Vec<i64>>>> = Arc::default();
    let last_201: Arc<Mutex<BTreeMap<&str, Instant>>> = Arc::default();
    let last_503: Arc<Mutex<BTreeMap<&str, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for (t, &kind) in TYPES.iter().enumerate() {
        let (stop, sent, seen, acked, last_201, last_503, base) = (
            stop.clone(),
            sent.clone(),
            seen.clone(),
            acked.clone(),
            last_201.clone(),
            last_503.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut n = t as i64;
            while !stop.load(Ordering::Relaxed)
                && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                n += TYPES.len() as i64;
                let req = post_metric(&http, &base, kind, n);
                let outcome = send(req).await;
                if let Ok(r) = &outcome {
                    r.json();
                    if r.status == 201 {
                        acked.lock().unwrap().entry(kind).or_default().push(n);
                        last_201.lock().unwrap().insert(kind, Instant::now());
                    } else {
                        last_503.lock().unwrap().insert(kind, r.body.clone());
                    }
                }
                seen.lock().unwrap().record("post", &outcome);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // Every type has writes acknowledged before the kill.
    until("every type has 20 writes acknowledged", PHASE_BOUND, || {
        acked_counts(&acked, 20)
    })
    .await;
    let key = format!("metric:{VICTIM}");
    let killed_at = Instant::now();
    let dead = tokio::task::block_in_place(|| cluster.kill_primary_of(&key));
    let new_primary = tokio::task::block_in_place(|| cluster.wait_failover(&key));
    let failover = killed_at.elapsed();
    // Writes go on during the failover and after it, without a replica behind the new primary
    // (so the victim's type cannot be acknowledged yet): wait for 60 more answers.
    let answered = seen.lock().unwrap().total;
    until("60 more answers after the failover", PHASE_BOUND, || {
        let total = seen.lock().unwrap().total;
        if total >= answered + 60 {
            Ok(())
        } else {
            Err(total)
        }
    })
    .await;
    let rejoined_at = Instant::now();
    tokio::task::block_in_place(|| cluster.restart_node(dead));
    // The API must find its way by itself: wait for a fresh 201 on the victim's type.
    let recovery_deadline = Instant::now() + Duration::from_secs(15);
    let recovered = loop {
        let fresh = last_201
            .lock()
            .unwrap()
            .get(VICTIM)
            .is_some_and(|t| *t > rejoined_at);
        if fresh {
            break rejoined_at.elapsed();
        }
        if Instant::now() > recovery_deadline {
            let snapshot = format!("{:?}", seen.lock().map(|s| s.of("post")));
            let why = last_503.lock().map(|m| m.get(VICTIM).cloned());
            panic!(
                "the API did not write {VICTIM} again after the failover: {snapshot}, last 503 \
                 {why:?}\n{}\n{}",
                api.log(),
                cluster.report()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The load goes on after the recovery until every type has 10 more writes acknowledged.
    let so_far: usize = acked
        .lock()
        .unwrap()
        .values()
        .map(Vec::len)
        .min()
        .unwrap_or(0);
    until(
        "10 more writes of every type after the recovery",
        PHASE_BOUND,
        || acked_counts(&acked, so_far + 10),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }

    let seen = seen.lock().unwrap();
    seen.assert_only(&[("post", &[201, 503])], REQUEST_BOUND);
    let acked = acked.lock().unwrap().clone();
    let mut conn = tokio::task::block_in_place(|| cluster.conn());
    let mut lost = Vec::new();
    for &kind in TYPES {
        let mine = acked.get(kind).cloned().unwrap_or_default();
        let v: Value = redis::cmd("METRIC.SUMMARY")
            .arg(format!("metric:{kind}"))
            .query(&mut conn)
            .expect("METRIC.SUMMARY");
        let count = field_f64(&v, "count").unwrap_or(0.0) as usize;
        let sum = field_f64(&v, "sum").unwrap_or(0.0);
        let acked_sum: i64 = mine.iter().sum();
        // Stored ⊇ acknowledged: at least as many, and (values positive) at least their sum.
        if count < mine.len() || sum < acked_sum as f64 {
            lost.push(format!(
                "{kind}: acked {} (sum {acked_sum}), stored {count} (sum {sum})",
                mine.len()
            ));
        }
        eprintln!("  {kind}: acknowledged {}, stored {count}", mine.len());
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!(
        "{} POSTs {:?}; primary {dead} killed, {new_primary} took over in {:.1}s, API writing \
         {VICTIM} again {:.1}s after the old primary rejoined; slowest {:?}; took {:.1}s",
        seen.total,
        seen.of("post"),
        failover.as_secs_f64(),
        recovered.as_secs_f64(),
        seen.slowest,
        started.elapsed().as_secs_f64()
    );
    drop(api);
}
