//! Labels (SPEC §9) over the real HTTP stack and real servers: tagged metrics, filters and
//! groups against exact statistics computed here (the 1% quantile rule, rank ceil(q n)),
//! windows, per-bucket quantiles, `MAX_SERIES_PER_TYPE` and the overflow series, a new
//! series seen at once by a second API instance, the key scheme's injectivity, and a
//! 3-primary cluster giving the same answers as a single node with series on every shard,
//! each primary getting a query's exports as one pipeline.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json as j, Value};
use tally_api::config::Config;
use tally_api::routes::metrics::rfc3339;
use tally_api::store::labels::{self, Part};
use tally_api::store::{Store, TypeIndex};
use tally_tests::api::{config, TestApp};
use tally_tests::cluster::Cluster;
use tally_tests::http::json;
use tally_tests::{now_ms, Server};

const QUANTILES: [(&str, u64); 4] = [("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)];

fn ts(ms: u64) -> String {
    rfc3339(Some(ms as i64)).expect("a representable time")
}

/// One sample of the fleet: (host, region, value, ms).
type Sample = (String, String, f64, u64);

/// 50 hosts in 3 regions, 12 samples each over 6 minutes ending 2 minutes ago.
fn fleet(base: u64) -> Vec<Sample> {
    let mut out = Vec::new();
    for h in 0..50u64 {
        let region = ["eu", "us", "ap"][(h % 3) as usize];
        for i in 0..12u64 {
            let value = ((h * 37 + i * 101) % 997) as f64 / 4.0 - 20.0 + h as f64;
            out.push((
                format!("web-{h}"),
                region.to_string(),
                value,
                base + i * 30_000,
            ));
        }
    }
    out
}

fn body_of(samples: &[Sample]) -> String {
    let items: Vec<Value> = samples
        .iter()
        .map(|(host, region, v, ms)| {
            j!({"timestamp": ts(*ms), "value": v, "type": "latency",
                "tags": {"host": host, "region": region}})
        })
        .collect();
    Value::Array(items).to_string()
}

/// The exact statistics of `values`, checked against a summary object (count, sum, min,
/// max, average, stddev exact up to rounding; quantiles within 1% of rank ceil(q n)).
fn assert_summary_of(values: &[f64], got: &Value, label: &str) {
    let n = values.len();
    assert_eq!(got["count"], n as u64, "{label}: {got}");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let sum: f64 = values.iter().sum();
    let mean = sum / n as f64;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
    assert!(
        close(got["sum"].as_f64().unwrap(), sum),
        "{label}: sum {got}"
    );
    assert!(
        close(got["average"].as_f64().unwrap(), mean),
        "{label}: avg {got}"
    );
    assert!(
        close(got["stddev"].as_f64().unwrap(), sd),
        "{label}: stddev {got}"
    );
    assert_eq!(got["min"].as_f64().unwrap(), sorted[0], "{label}");
    assert_eq!(got["max"].as_f64().unwrap(), sorted[n - 1], "{label}");
    for (name, q) in QUANTILES {
        let rank = (q as usize * n).div_ceil(100).max(1);
        let exact = sorted[rank - 1];
        let v = got[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{label}: {name} {got}"));
        assert!(
            (v - exact).abs() <= 0.01 * exact.abs(),
            "{label}: {name} {v} vs exact {exact}"
        );
    }
}

async fn get(app: &TestApp, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{}{path}", app.base);
    json(app.client.get(url).query(query).send().await.expect("GET")).await
}

fn app_config(url: &str) -> Config {
    Config {
        rate_limit: 1_000_000,
        ..config(url)
    }
}

/// Posts the fleet through `app` and checks every labels answer against the exact
/// statistics; returns the answers, to compare across deployments.
async fn fleet_answers(app: &TestApp, base: u64) -> Vec<Value> {
    let samples = fleet(base);
    let (status, body) = json(app.post_batch(&body_of(&samples)).await).await;
    assert_eq!(status, 201, "{body}");
    let mut answers = Vec::new();

    // Everything, merged over the 50 series.
    let all: Vec<f64> = samples.iter().map(|s| s.2).collect();
    let (status, body) = get(app, "/api/metrics/summary", &[("metric_type", "latency")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["series"], 50, "{body}");
    assert_summary_of(&all, &body, "all");
    answers.push(body);

    // p99 in eu.
    let eu: Vec<f64> = samples
        .iter()
        .filter(|s| s.1 == "eu")
        .map(|s| s.2)
        .collect();
    let (status, body) = get(
        app,
        "/api/metrics/summary",
        &[("metric_type", "latency"), ("tag.region", "eu")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["series"], 17, "{body}");
    assert_summary_of(&eu, &body, "eu");
    answers.push(body);

    // Two filters, all must match; none matching is an empty summary.
    let (_, body) = get(
        app,
        "/api/metrics/summary",
        &[
            ("metric_type", "latency"),
            ("tag.region", "eu"),
            ("tag.host", "web-3"),
        ],
    )
    .await;
    let one: Vec<f64> = samples
        .iter()
        .filter(|s| s.0 == "web-3")
        .map(|s| s.2)
        .collect();
    assert_eq!(body["series"], 1);
    assert_summary_of(&one, &body, "web-3");
    let (_, body) = get(
        app,
        "/api/metrics/summary",
        &[
            ("metric_type", "latency"),
            ("tag.region", "us"),
            ("tag.host", "web-3"),
        ],
    )
    .await;
    assert_eq!(
        (body["series"].clone(), body["count"].clone()),
        (j!(0), j!(0)),
        "{body}"
    );
    assert_eq!(body["p99"], Value::Null);

    // Per region, groups sorted by value.
    let (status, body) = get(
        app,
        "/api/metrics/summary",
        &[("metric_type", "latency"), ("group_by", "region")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["group_by"], j!(["region"]));
    let groups = body["groups"].as_array().expect("groups");
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["tags"]["region"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ap", "eu", "us"]);
    for g in groups {
        let region = g["tags"]["region"].as_str().unwrap();
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.1 == region)
            .map(|s| s.2)
            .collect();
        assert_summary_of(&values, g, region);
    }
    answers.push(body);

    // Per host within a region, and per (region, missing key): null groups.
    let (_, body) = get(
        app,
        "/api/metrics/summary",
        &[
            ("metric_type", "latency"),
            ("tag.region", "ap"),
            ("group_by", "host,dc"),
        ],
    )
    .await;
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 16, "{body}");
    for g in groups {
        assert_eq!(g["tags"]["dc"], Value::Null);
        let host = g["tags"]["host"].as_str().unwrap();
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 == host)
            .map(|s| s.2)
            .collect();
        assert_summary_of(&values, g, host);
    }
    answers.push(body);

    // A window of the last 4 minutes: the samples at most 4 minutes old (rounded down to the
    // stored minute), merged.
    let (status, body) = get(
        app,
        "/api/metrics/summary",
        &[
            ("metric_type", "latency"),
            ("window", "3600"),
            ("tag.region", "us"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let us: Vec<f64> = samples
        .iter()
        .filter(|s| s.1 == "us")
        .map(|s| s.2)
        .collect();
    assert_summary_of(&us, &body, "us, window");
    assert_eq!(body["window"], 3600);

    // Series: per-minute points with quantiles, merged over the region's series.
    let (from, to) = (ts(base), ts(base + 360_000));
    let query = [
        ("metric_type", "latency"),
        ("from", from.as_str()),
        ("to", to.as_str()),
        ("bucket", "60"),
    ];
    let (status, body) = get(
        app,
        "/api/metrics/series",
        &[&query[..], &[("tag.region", "eu")]].concat(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["series"], 17);
    let points = body["points"].as_array().expect("points");
    assert_eq!(points.len(), 6, "{body}");
    for p in points {
        let start = base / 60_000 * 60_000;
        let t = p["timestamp"].as_str().unwrap();
        let minute = (0..6u64)
            .find(|m| ts(start + m * 60_000) == t)
            .expect("a minute");
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.1 == "eu" && (s.3 - start) / 60_000 == minute)
            .map(|s| s.2)
            .collect();
        assert_summary_of_point(&values, p, t);
    }
    answers.push(body);
    let (_, body) = get(
        app,
        "/api/metrics/series",
        &[&query[..], &[("group_by", "region")]].concat(),
    )
    .await;
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 3, "{body}");
    for g in groups {
        let n: u64 = g["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_u64().unwrap())
            .sum();
        assert_eq!(n, g["series"].as_u64().unwrap() * 12, "{g}");
    }
    answers.push(body);

    // The tags.
    let (status, body) = get(app, "/api/metrics/tags", &[("metric_type", "latency")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["series"], 50);
    assert_eq!(body["tags"]["region"], j!(["ap", "eu", "us"]));
    let hosts: BTreeSet<String> = (0..50).map(|h| format!("web-{h}")).collect();
    assert_eq!(body["tags"]["host"], j!(hosts));
    answers.push(body);
    answers
}

/// A point's fields against exact statistics (no stddev in points).
fn assert_summary_of_point(values: &[f64], p: &Value, label: &str) {
    let mut with_sd = p.clone();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    with_sd["stddev"] = j!(sd);
    assert_summary_of(values, &with_sd, label);
}

fn minute_ago_base() -> u64 {
    (now_ms() - 480_000) / 60_000 * 60_000
}

#[tokio::test]
async fn filters_groups_windows_and_bucket_quantiles_match_exact_statistics() {
    let server = Server::start();
    let app = TestApp::spawn_with(app_config(&server.url())).await;
    fleet_answers(&app, minute_ago_base()).await;
    // Untagged metrics keep their key and their reply (plus "series").
    let (status, _) = json(
        app.post_metric(&j!({"timestamp": ts(now_ms()), "value": 5, "type": "plain"}).to_string())
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let mut c = server.conn();
    let kind: String = tally_tests::redis::cmd("TYPE")
        .arg("metric:plain")
        .query(&mut c)
        .unwrap();
    assert_eq!(kind, "tally-met");
    let (_, body) = get(&app, "/api/metrics/summary", &[("metric_type", "plain")]).await;
    assert_eq!(
        (body["count"].clone(), body["series"].clone()),
        (j!(1), j!(1)),
        "{body}"
    );
}

#[tokio::test]
async fn bad_tags_and_bad_selectors_are_422_naming_the_tag_and_nothing_is_stored() {
    let server = Server::start();
    let app = TestApp::spawn_with(app_config(&server.url())).await;
    let long = "x".repeat(129);
    for (tags, needle) in [
        (j!({"Host": "a"}), "\"Host\""),
        (j!({"host": ""}), "\"host\""),
        (j!({"host": long}), "\"host\""),
        (j!({"host": 5}), "\"host\""),
        (j!({"host": "a\u{7}"}), "control"),
        (j!({"__overflow__": "true"}), "reserved"),
        (j!(["host"]), "tags"),
        (
            j!({"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1"}),
            "8",
        ),
    ] {
        let body = j!({"timestamp": ts(now_ms()), "value": 1, "type": "t", "tags": tags});
        let (status, reply) = json(app.post_metric(&body.to_string()).await).await;
        assert_eq!(status, 422, "{tags}: {reply}");
        assert!(
            reply["detail"].as_str().unwrap().contains(needle),
            "{tags}: {reply}"
        );
    }
    let (_, body) = get(&app, "/api/metrics/tags", &[("metric_type", "t")]).await;
    assert_eq!(body, j!({"type": "t", "series": 0, "tags": {}}));
    for query in [
        vec![("metric_type", "t"), ("tag.Host", "a")],
        vec![("metric_type", "t"), ("tag.host", "")],
        vec![("metric_type", "t"), ("group_by", "host,,x")],
        vec![("metric_type", "t"), ("group_by", "host,host")],
    ] {
        for path in ["/api/metrics/summary", "/api/metrics/series"] {
            let (status, reply) = get(&app, path, &query).await;
            assert_eq!(status, 422, "{path} {query:?}: {reply}");
        }
    }
}

async fn post(app: &TestApp, host: &str, v: f64) -> (u16, Value) {
    let body = j!({"timestamp": ts(now_ms()), "value": v, "type": "cap", "tags": {"host": host}});
    json(app.post_metric(&body.to_string()).await).await
}

#[tokio::test]
async fn the_cap_sends_new_tag_sets_to_the_overflow_series_and_a_second_instance_sees_series_at_once(
) {
    let server = Server::start();
    let capped = |url: &str| Config {
        max_series_per_type: 3,
        ..app_config(url)
    };
    let a = TestApp::spawn_with(capped(&server.url())).await;
    let b = TestApp::spawn_with(capped(&server.url())).await;
    assert_eq!(post(&a, "h1", 1.0).await.0, 201);
    // Visible through the other instance as soon as the 201 is sent.
    let (_, body) = get(
        &b,
        "/api/metrics/summary",
        &[("metric_type", "cap"), ("tag.host", "h1")],
    )
    .await;
    assert_eq!(
        (body["series"].clone(), body["count"].clone()),
        (j!(1), j!(1)),
        "{body}"
    );
    assert_eq!(post(&b, "h2", 2.0).await.0, 201);
    assert_eq!(post(&a, "h3", 3.0).await.0, 201);
    // Past the cap: stored (201), in the overflow series, counted; nothing dropped.
    assert_eq!(post(&a, "h4", 4.0).await.0, 201);
    assert_eq!(post(&b, "h5", 5.0).await.0, 201);
    assert_eq!(post(&a, "h4", 6.0).await.0, 201);
    // Known tag sets keep their series.
    assert_eq!(post(&b, "h1", 7.0).await.0, 201);
    let (_, body) = get(&a, "/api/metrics/summary", &[("metric_type", "cap")]).await;
    assert_eq!(
        (body["series"].clone(), body["count"].clone()),
        (j!(4), j!(7)),
        "{body}"
    );
    assert_eq!(body["sum"], 28.0);
    let (_, body) = get(
        &b,
        "/api/metrics/summary",
        &[("metric_type", "cap"), ("tag.__overflow__", "true")],
    )
    .await;
    assert_eq!(
        (body["count"].clone(), body["sum"].clone()),
        (j!(3), j!(15.0)),
        "{body}"
    );
    let (_, body) = get(&a, "/api/metrics/tags", &[("metric_type", "cap")]).await;
    assert_eq!(
        body,
        j!({"type": "cap", "series": 4, "tags": {"__overflow__": ["true"], "host": ["h1", "h2", "h3"]}})
    );
    let metrics = a.prometheus().await + &b.prometheus().await;
    let total: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tally_series_overflow_total{type=\"cap\"}"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 3, "{metrics}");
}

#[tokio::test]
async fn the_key_scheme_keeps_every_tag_set_apart_whatever_its_values_hold() {
    let server = Server::start();
    let app = TestApp::spawn_with(app_config(&server.url())).await;
    let values = [
        "a", "a,b", "a=b", "a;b", "a:b", "a|b", "{a}", "}{", "a\\b", "a b", " ", "%", "%25",
        "a,host=b", "é ü",
    ];
    let items: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            j!({"timestamp": ts(now_ms()), "value": i as f64, "type": "odd type {x}|",
                "tags": {"host": v}})
        })
        .collect();
    let (status, body) = json(app.post_batch(&Value::Array(items).to_string()).await).await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = get(
        &app,
        "/api/metrics/summary",
        &[("metric_type", "odd type {x}|"), ("group_by", "host")],
    )
    .await;
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), values.len(), "{body}");
    let got: BTreeMap<String, f64> = groups
        .iter()
        .map(|g| {
            (
                g["tags"]["host"].as_str().unwrap().to_string(),
                g["sum"].as_f64().unwrap(),
            )
        })
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(got.get(*v), Some(&(i as f64)), "{v:?}: {body}");
    }
    // No key holds a hash tag: every tagged series key lacks braces.
    let mut c = server.conn();
    let keys: Vec<String> = tally_tests::redis::cmd("KEYS")
        .arg("series:*")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys.len(), values.len());
    assert!(
        keys.iter().all(|k| !k.contains('{') && !k.contains('}')),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_answers_like_a_single_node_with_series_on_every_shard() {
    let base = minute_ago_base();
    let server = Server::start();
    let single = TestApp::spawn_with(app_config(&server.url())).await;
    let single_answers = fleet_answers(&single, base).await;

    let cluster = Cluster::start();
    let app = TestApp::spawn_with(Config {
        redis_cluster: true,
        redis_urls: cluster.seed_urls(),
        ..app_config("redis://127.0.0.1:1")
    })
    .await;
    let cluster_answers = fleet_answers(&app, base).await;
    // The type's series spread over every primary.
    let shards: BTreeSet<u16> = (0..50)
        .map(|h| {
            let region = ["eu", "us", "ap"][h % 3];
            cluster.primary_for_key(&format!("series:latency|host=web-{h},region={region}"))
        })
        .collect();
    assert_eq!(shards.len(), 3);
    assert_eq!(single_answers, cluster_answers);
    // Every primary served METRIC.EXPORTs of the type's series.
    for port in cluster.primaries() {
        assert!(calls(cluster.node(port), "METRIC.EXPORT") > 0, "{port}");
    }
}

/// `total_reads_processed` of `INFO stats`: the reads of client sockets, one per pipeline
/// that fits in a read (the reading `INFO` counts itself; `c` is kept open, as a new
/// connection's greeting counts too).
fn reads(c: &mut tally_tests::redis::Connection) -> u64 {
    let info: String = tally_tests::redis::cmd("INFO")
        .arg("stats")
        .query(c)
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_reads_processed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_export_is_one_pipeline_per_primary_not_one_per_slot() {
    let base = minute_ago_base();
    let mut cluster = Cluster::start();
    let config = Config {
        redis_cluster: true,
        redis_urls: cluster.seed_urls(),
        ..app_config("redis://127.0.0.1:1")
    };
    let app = TestApp::spawn_with(config.clone()).await;
    let samples = fleet(base);
    let (status, body) = json(app.post_batch(&body_of(&samples)).await).await;
    assert_eq!(status, 201, "{body}");
    let keys: Vec<String> = (0..50)
        .map(|h| {
            let tags = vec![
                ("host".to_string(), format!("web-{h}")),
                ("region".to_string(), ["eu", "us", "ap"][h % 3].to_string()),
            ];
            labels::series_key("latency", &tags)
        })
        .collect();
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let mut keys_of: BTreeMap<u16, usize> = BTreeMap::new();
    let mut slots_of: BTreeMap<u16, BTreeSet<u16>> = BTreeMap::new();
    for key in &keys {
        let primary = cluster.primary_for_key(key);
        *keys_of.entry(primary).or_default() += 1;
        slots_of
            .entry(primary)
            .or_default()
            .insert(tally_api::store::keys::hash_slot(key.as_bytes()));
    }
    // Every primary serves several of the series' slots (one pipeline each, before).
    for p in &primaries {
        assert!(slots_of[p].len() > 5, "{p}: {:?}", slots_of[p]);
    }

    let store = Store::new(&config, TypeIndex::new()).expect("a store");
    // The first call connects and reads the slot map.
    let first = store
        .export_states("latency", &keys, Part::AllTime)
        .await
        .expect("an export");
    assert!(first.iter().all(Option::is_some));
    let mut conns: Vec<_> = primaries.iter().map(|p| cluster.node_conn(*p)).collect();
    // A primary's replica may send an ack within the measure: the fewest reads of 3 tries.
    let mut fewest: BTreeMap<u16, u64> = BTreeMap::new();
    for _ in 0..3 {
        let exports: Vec<u64> = primaries
            .iter()
            .map(|p| calls(cluster.node(*p), "METRIC.EXPORT"))
            .collect();
        let before: Vec<u64> = conns.iter_mut().map(reads).collect();
        let again = store
            .export_states("latency", &keys, Part::AllTime)
            .await
            .expect("an export");
        assert_eq!(again, first);
        for (i, p) in primaries.iter().enumerate() {
            // The reading INFO counts itself once.
            let got = reads(&mut conns[i]) - before[i] - 1;
            let least = fewest.entry(*p).or_insert(u64::MAX);
            *least = (*least).min(got);
            assert_eq!(
                calls(cluster.node(*p), "METRIC.EXPORT") - exports[i],
                keys_of[p] as u64,
                "{p}"
            );
        }
    }
    // One pipeline (one read) per primary, though each serves several slots of the keys. (A
    // bound, not a count: redis-rs may coalesce pipelines sent at once into one write; the
    // grouping itself is unit-tested in `store::labels`.)
    for p in &primaries {
        assert_eq!(fewest[p], 1, "{p}: {fewest:?}, slots {:?}", slots_of[p]);
    }

    // A failover behind the cached slot map: the pipeline to the dead primary fails, the
    // store falls back to per-slot pipelines and reads the map again; never a wrong answer.
    drop(conns);
    cluster.kill_primary_of(&keys[0]);
    cluster.wait_failover(&keys[0]);
    let started = std::time::Instant::now();
    loop {
        match store.export_states("latency", &keys, Part::AllTime).await {
            Ok(states) => {
                assert_eq!(states, first);
                break;
            }
            Err(e) => assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{e}\n{}",
                cluster.report()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Then straight to the new primaries again.
    let again = store.export_states("latency", &keys, Part::AllTime).await;
    assert_eq!(again.expect("an export"), first);
}

#[tokio::test]
async fn a_window_merges_only_the_recent_samples_of_every_matching_series() {
    let server = Server::start();
    let app = TestApp::spawn_with(app_config(&server.url())).await;
    let now = now_ms();
    let mut items = Vec::new();
    let mut recent: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (i, host) in ["a", "b", "c"].iter().enumerate() {
        for k in 0..10u64 {
            // Ten minutes ago: outside a 60 s window.
            let old = (100 + i * 10 + k as usize) as f64;
            items.push(j!({"timestamp": ts(now - 600_000 + k * 1000), "value": old,
                           "type": "win", "tags": {"host": host}}));
            // The last 30 s: inside it.
            let v = (i * 10) as f64 + k as f64 / 2.0;
            items.push(j!({"timestamp": ts(now - 30_000 + k * 2000), "value": v,
                           "type": "win", "tags": {"host": host}}));
            recent.entry(host).or_default().push(v);
        }
    }
    let (status, body) = json(app.post_batch(&Value::Array(items).to_string()).await).await;
    assert_eq!(status, 201, "{body}");
    let all: Vec<f64> = recent.values().flatten().copied().collect();
    let (status, body) = get(
        &app,
        "/api/metrics/summary",
        &[("metric_type", "win"), ("window", "60")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["window"].clone(), body["series"].clone()),
        (j!(60), j!(3))
    );
    assert_summary_of(&all, &body, "window 60");
    let (_, body) = get(
        &app,
        "/api/metrics/summary",
        &[
            ("metric_type", "win"),
            ("window", "60"),
            ("group_by", "host"),
        ],
    )
    .await;
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 3, "{body}");
    for g in groups {
        let host = g["tags"]["host"].as_str().unwrap();
        assert_summary_of(&recent[host], g, host);
    }
    // A window beyond the retention is a 422, as for one series.
    let (status, _) = get(
        &app,
        "/api/metrics/summary",
        &[
            ("metric_type", "win"),
            ("window", "3601"),
            ("tag.host", "a"),
        ],
    )
    .await;
    assert_eq!(status, 422);
}

/// `calls` of `cmdstat_<name>` in `INFO commandstats`.
fn calls(server: &Server, name: &str) -> u64 {
    let mut c = server.conn();
    let info: String = tally_tests::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_tag_set_this_instance_knows_costs_no_extra_round_trip() {
    let server = Server::start();
    let app = TestApp::spawn_with(app_config(&server.url())).await;
    let body = |v: f64| {
        j!({"timestamp": ts(now_ms()), "value": v, "type": "k", "tags": {"host": "x"}}).to_string()
    };
    assert_eq!(json(app.post_metric(&body(1.0)).await).await.0, 201);
    let evals = calls(&server, "eval");
    assert!(evals >= 1);
    for v in 2..6 {
        assert_eq!(
            json(app.post_metric(&body(f64::from(v))).await).await.0,
            201
        );
    }
    assert_eq!(
        calls(&server, "eval"),
        evals,
        "known tag sets are not registered again"
    );
    let (_, body) = get(&app, "/api/metrics/summary", &[("metric_type", "k")]).await;
    assert_eq!(body["count"], 5, "{body}");
}
