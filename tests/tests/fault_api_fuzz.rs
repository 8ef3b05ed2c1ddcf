//! HTTP fuzzing of the real `tally-api` process backed by a real Redis: thousands of seeded
//! random hostile requests (garbage, truncated and deeply nested JSON, huge and odd numbers,
//! wrong types, control characters and very long types, invalid UTF-8, odd content types,
//! methods, paths, query strings and `X-Forwarded-For`), plus malformed raw HTTP. Never a 5xx
//! (Redis is up, so not even 503), every API answer is JSON, the process stays up, and a valid
//! request works at the end. `TALLY_FUZZ_SEED` replays a run.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tally_tests::api::{metric_body, post_metric, ApiProc};
use tally_tests::http::{client, raw_exchange, raw_status, send, REQUEST_BOUND};
use tally_tests::load::Seen;
use tally_tests::{Rng, Server};

const REQUESTS: usize = 2400;
const RAW_REQUESTS: usize = 200;
const TASKS: usize = 4;

/// Hostile text for the fuzz, from the suites' one generator.
trait FuzzText {
    fn text(&mut self, len: usize) -> String;
    fn encoded(&mut self, len: usize) -> String;
}

impl FuzzText for Rng {
    /// Random text: ASCII, control characters, multi-byte and astral characters.
    fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| match self.below(6) {
                0 => char::from_u32(self.below(32) as u32).unwrap(),
                1 => char::from_u32(0x80 + self.below(0x780) as u32).unwrap_or('é'),
                2 => *self.pick(&[&'\u{202e}', &'\u{feff}', &'\u{1f600}', &'\u{10ffff}']),
                _ => (b' ' + self.below(95) as u8) as char,
            })
            .collect()
    }
    /// Percent-encoded random bytes (for paths and query strings).
    fn encoded(&mut self, len: usize) -> String {
        self.bytes(len)
            .iter()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (*b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn hostile_value(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => rng
            .pick(&[
                "1e999",
                "-1e999",
                "-0",
                "1e308",
                "-1e308",
                "1e-400",
                "5e-324",
                "99999999999999999999999999",
                "-9223372036854775809",
                "18446744073709551616",
                "NaN",
                "Infinity",
                "0x10",
                "01",
                "1.",
                ".5",
                "+1",
                "--1",
                "1e",
                "null",
                "true",
                "\"75\"",
                "[]",
                "{}",
                "[75]",
                "{\"v\":1}",
            ])
            .to_string(),
        1 => format!("{}", rng.next_u64() as i64),
        _ => format!("{}", f64::from_bits(rng.next_u64())).replace("inf", "1e999"),
    }
}

fn hostile_type(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => json_string(&{
            let n = 1 + rng.below(40);
            rng.text(n)
        }),
        1 => json_string(&"x".repeat(1 + rng.below(200_000))),
        2 => json_string(""),
        3 => rng
            .pick(&[
                "null",
                "1",
                "[]",
                "{}",
                "true",
                "\"a\\u0000b\"",
                "\"\\ud800\"",
                "\"cpu",
            ])
            .to_string(),
        4 => json_string(&format!("{{tag}}{}", rng.below(10))),
        _ => json_string(rng.pick(&["cpu", "fuzz", "metric:fuzz", "*", "../x", "a b"])),
    }
}

fn hostile_timestamp(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => json_string(&{
            let n = rng.below(30);
            rng.text(n)
        }),
        1 => rng.pick(&["null", "0", "1e999", "[]", "-1"]).to_string(),
        _ => json_string(rng.pick(&[
            "2025-01-01T10:00:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "+275760-09-13T00:00:00Z",
            "2025-13-45T99:99:99",
            "2025-01-01T10:00:00+25:00",
            "2025-01-01T10:00:00.999999999999Z",
            "2025-01-01",
            "",
        ])),
    }
}

/// One metric object, possibly with fields missing, doubled, mistyped or extra.
fn hostile_object(rng: &mut Rng) -> String {
    let mut fields = Vec::new();
    if rng.below(5) > 0 {
        fields.push(format!("\"timestamp\":{}", hostile_timestamp(rng)));
    }
    if rng.below(5) > 0 {
        fields.push(format!("\"value\":{}", hostile_value(rng)));
    }
    if rng.below(5) > 0 {
        fields.push(format!("\"type\":{}", hostile_type(rng)));
    }
    if rng.below(4) == 0 {
        fields.push(format!(
            "{}:{}",
            json_string(&rng.text(5)),
            hostile_value(rng)
        ));
    }
    if rng.below(8) == 0 && !fields.is_empty() {
        let dup = fields[0].clone();
        fields.push(dup);
    }
    format!("{{{}}}", fields.join(","))
}

fn hostile_body(rng: &mut Rng, batch: bool) -> Vec<u8> {
    let body = match rng.below(10) {
        0 => {
            return {
                let n = rng.below(300);
                rng.bytes(n)
            }
        } // often invalid UTF-8
        1 => {
            let depth = 1 + rng.below(20_000);
            let (open, close) = if rng.below(2) == 0 {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            format!("{}1{}", open.repeat(depth), close.repeat(depth))
        }
        2 => {
            let valid = metric_body("fuzz", rng.below(100) as i64);
            let cut = rng.below(valid.len());
            valid[..cut].to_string()
        }
        3 => rng
            .pick(&[
                "",
                "null",
                "[]",
                "{}",
                "\"x\"",
                "1",
                "[{}]",
                "[null]",
                "{\"a\":}",
                "\u{feff}{}",
            ])
            .to_string(),
        4 => {
            let n = rng.below(30);
            let items: Vec<String> = (0..n).map(|_| hostile_object(rng)).collect();
            format!("[{}]", items.join(","))
        }
        5 => metric_body("fuzz", rng.below(1000) as i64),
        _ => hostile_object(rng),
    };
    if batch && rng.below(2) == 0 {
        format!("[{body}]").into_bytes()
    } else {
        body.into_bytes()
    }
}

fn hostile_query(rng: &mut Rng, keys: &[&str]) -> String {
    let mut parts = Vec::new();
    for _ in 0..rng.below(5) {
        let key = if rng.below(5) == 0 {
            {
                let n = rng.below(8);
                rng.encoded(n)
            }
        } else {
            rng.pick(keys).to_string()
        };
        let value = match rng.below(5) {
            0 => {
                let n = rng.below(20);
                rng.encoded(n)
            }
            1 => hostile_value(rng).replace(['"', '{', '}', '[', ']', ' '], ""),
            2 => rng
                .pick(&[
                    "0",
                    "-1",
                    "60",
                    "1",
                    "3600",
                    "3601",
                    "86400",
                    "18446744073709551616",
                    "1e3",
                    "1.5",
                    "",
                    "%00",
                    "2025-01-01T10:00:00Z",
                    "1969-01-01T00:00:00Z",
                    "9999-12-31T23:59:59Z",
                    "%2B275760-09-13T00:00:00Z",
                    "cpu",
                    "fuzz",
                ])
                .to_string(),
            3 => (rng.next_u64() % 10_000_000).to_string(),
            _ => "fuzz".to_string(),
        };
        parts.push(format!("{key}={value}"));
    }
    parts.join("&")
}

const PATHS: &[&str] = &[
    "/api/metrics",
    "/api/metrics/batch",
    "/api/metrics/summary",
    "/api/metrics/series",
    "/api/metrics/types",
    "/health",
    "/external",
];

/// (method, path+query, content type, X-Forwarded-For, body).
type Request = (
    reqwest::Method,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<u8>,
);

fn hostile_request(rng: &mut Rng) -> Request {
    use reqwest::Method;
    let (method, path, body) = match rng.below(8) {
        0 | 1 => (
            Method::POST,
            "/api/metrics".to_string(),
            hostile_body(rng, false),
        ),
        2 => (
            Method::POST,
            "/api/metrics/batch".to_string(),
            hostile_body(rng, true),
        ),
        3 => {
            let q = hostile_query(rng, &["metric_type", "window", "x"]);
            (Method::GET, format!("/api/metrics/summary?{q}"), Vec::new())
        }
        4 => {
            let q = hostile_query(rng, &["metric_type", "from", "to", "bucket"]);
            (Method::GET, format!("/api/metrics/series?{q}"), Vec::new())
        }
        5 => {
            let q = hostile_query(rng, &["cursor", "metric_type"]);
            (Method::GET, format!("/api/metrics/types?{q}"), Vec::new())
        }
        6 => {
            let method = match rng.below(7) {
                0 => Method::PUT,
                1 => Method::DELETE,
                2 => Method::PATCH,
                3 => Method::OPTIONS,
                4 => Method::HEAD,
                5 => Method::from_bytes(b"FROB").unwrap(),
                _ => Method::GET,
            };
            let path = rng.pick(PATHS).to_string();
            (method, path, hostile_body(rng, false))
        }
        _ => {
            let path = match rng.below(3) {
                0 => format!("/{}", {
                    let n = rng.below(40);
                    rng.encoded(n)
                }),
                1 => format!("/api/{}", {
                    let n = rng.below(10);
                    rng.encoded(n)
                }),
                _ => format!("{}/{}", rng.pick(PATHS), {
                    let n = rng.below(5);
                    rng.encoded(n)
                }),
            };
            (Method::GET, path, Vec::new())
        }
    };
    let content_type = match rng.below(16) {
        0 => None,
        1 => Some(b"text/plain".to_vec()),
        2 => Some(b"application/json; charset=latin1".to_vec()),
        3 => Some(b"application/x-www-form-urlencoded".to_vec()),
        4 => Some(b"APPLICATION/JSON".to_vec()),
        5 => Some(b"application/json\xff\xfe".to_vec()),
        6 => Some(b"multipart/form-data; boundary=".to_vec()),
        _ => Some(b"application/json".to_vec()),
    };
    let forwarded_for = match rng.below(4) {
        0 => Some(
            rng.pick(&[
                &b"1.2.3.4"[..],
                b"::1, 10.0.0.1",
                b"garbage, , ,",
                b"999.999.999.999",
                b"\xff\xfe",
                b"unknown",
                b"[::1]:80",
            ])
            .to_vec(),
        ),
        1 => Some(
            rng.text(20)
                .bytes()
                .filter(|b| *b >= 0x20 && *b != 0x7f)
                .collect(),
        ),
        _ => None,
    };
    (method, path, content_type, forwarded_for, body)
}

/// Malformed HTTP on a raw socket.
fn raw_request(rng: &mut Rng) -> Vec<u8> {
    let mut out = match rng.below(6) {
        0 => {
            let n = rng.below(200);
            rng.bytes(n)
        }
        1 => b"POST /api/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"va".to_vec(),
        2 => b"GET /health HTTP/9.9\r\n\r\n".to_vec(),
        3 => format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", rng.text(20)).into_bytes(),
        4 => b"POST /api/metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            .to_vec(),
        _ => format!(
            "GET /api/metrics/summary?metric_type=cpu HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(rng.below(100_000))
        )
        .into_bytes(),
    };
    if rng.below(3) == 0 {
        out.truncate(rng.below(out.len() + 1));
    }
    out
}

fn needs_json(method: &reqwest::Method, path: &str) -> bool {
    // /docs is HTML and /metrics is the Prometheus text format; HEAD has no body.
    method != reqwest::Method::HEAD
        && !path.starts_with("/docs")
        && !(path == "/metrics" || path.starts_with("/metrics?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_hostile_requests_never_get_a_5xx_and_the_api_stays_up() {
    let started = Instant::now();
    // Kept to the end: a failure prints the seed and how to replay it.
    let root = Rng::from_env("TALLY_FUZZ_SEED", 0x7a11_f022);
    let server = Server::start();
    let mut api = ApiProc::start(&server.url(), &[("RATE_LIMIT", "1000000000")]);
    let base = api.base();

    let seen = Seen::shared();
    let bad: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (seen, bad, base) = (seen.clone(), bad.clone(), base.clone());
        let mut rng = root.derive(t as u64);
        tasks.push(tokio::spawn(async move {
            let http = client();
            for _ in 0..REQUESTS / TASKS {
                let (method, path, content_type, xff, body) = hostile_request(&mut rng);
                let mut req = http.request(method.clone(), format!("{base}{path}"));
                if let Some(ct) = &content_type {
                    req = req.header("content-type", ct.as_slice());
                }
                if let Some(x) = &xff {
                    req = req.header("x-forwarded-for", x.as_slice());
                }
                if !body.is_empty() {
                    req = req.body(body.clone());
                }
                let outcome = send(req).await;
                let mut problem = None;
                match &outcome {
                    Ok(r) if r.status >= 500 => problem = Some("5xx"),
                    Ok(r)
                        if needs_json(&method, &path)
                            && serde_json::from_str::<serde_json::Value>(&r.body).is_err() =>
                    {
                        problem = Some("not JSON")
                    }
                    _ => {}
                }
                if let (Some(why), Ok(r)) = (problem, &outcome) {
                    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    bad.lock().unwrap().push(format!(
                        "{why}: {method} {} ct={:?} -> {} {:?} (body {shown:?})",
                        &path[..path.len().min(200)],
                        content_type.as_deref().map(String::from_utf8_lossy),
                        r.status,
                        &r.body[..r.body.len().min(300)]
                    ));
                }
                seen.lock().unwrap().record(method.as_str(), &outcome);
            }
        }));
    }
    for t in tasks {
        t.await.expect("fuzz task");
    }

    // Malformed HTTP on raw sockets: any answer but a 5xx, or a closed connection.
    let mut rng = Rng::new(root.seed() ^ 0xdead_beef);
    let mut raw_statuses = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..RAW_REQUESTS {
        let bytes = raw_request(&mut rng);
        let answer = raw_exchange(api.port, &bytes, REQUEST_BOUND)
            .await
            .unwrap_or_else(|e| panic!("raw request {:?}: {e}", String::from_utf8_lossy(&bytes)));
        let status = raw_status(&answer);
        assert!(
            !status.starts_with('5'),
            "raw request got {status}: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        );
        *raw_statuses.entry(status).or_default() += 1;
    }

    let bad = bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "{} bad answers, e.g.:\n{}",
        bad.len(),
        bad[..bad.len().min(10)].join("\n")
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.failures.is_empty(),
        "{} transport failures (reset or hang), e.g. {:?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(5)]
    );
    assert!(seen.slowest <= REQUEST_BOUND, "slowest {:?}", seen.slowest);
    assert!(api.is_running(), "the API process died:\n{}", api.log());

    // A valid request still works.
    let http = client();
    let r = send(post_metric(&http, &base, "after-fuzz", 42))
        .await
        .expect("valid POST");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(http.get(format!("{base}/api/metrics/summary?metric_type=after-fuzz")))
        .await
        .expect("summary");
    assert_eq!(
        (r.status, r.json()["count"].as_u64()),
        (200, Some(1)),
        "{}",
        r.body
    );

    eprintln!(
        "{} requests ({REQUESTS} HTTP + {RAW_REQUESTS} raw), slowest {:?}, took {:.1}s",
        seen.total + RAW_REQUESTS,
        seen.slowest,
        started.elapsed().as_secs_f64()
    );
    for (method, statuses) in &seen.statuses {
        eprintln!("  {method}: {statuses:?}");
    }
    eprintln!("  raw: {raw_statuses:?}");
}
