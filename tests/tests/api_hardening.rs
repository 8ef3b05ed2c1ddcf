//! The API's edges: a metric timestamp from the future is refused (422, nothing stored, no
//! budget used), and slow clients (head or body trickled) get 408 and a closed connection by
//! the 10 s request deadline, while a slow but complete request still succeeds. The slow-client
//! checks talk raw TCP, so the bytes arrive exactly as written.

use std::time::{Duration, Instant};

use tally_tests::api::{assert_whole_budget, config, exists, stored_count, TestApp};
use tally_tests::http::json;
use tally_tests::{free_port, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// No sample from the future

const FAR_FUTURE: &str = r#"{"timestamp":"9999-12-31T23:59:59Z","value":1,"type":"future"}"#;

#[tokio::test]
async fn a_metric_dated_in_the_far_future_is_refused_and_stores_nothing() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let (status, body) = json(app.post_metric(FAR_FUTURE).await).await;
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("timestamp") && detail.contains("future"),
        "{detail}"
    );
    assert!(!exists(&server, "metric:future"), "nothing stored");
    assert!(!exists(&server, "ratelimit:127.0.0.1"), "no budget used");
    // A valid request afterwards has the whole budget.
    assert_whole_budget(&app).await;
}

#[tokio::test]
async fn a_timestamp_just_inside_five_minutes_ahead_is_stored_and_one_further_is_not() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |secs: i64, kind: &str| {
        format!(
            r#"{{"timestamp":"{}","value":1,"type":"{kind}"}}"#,
            tally_api::routes::metrics::rfc3339(Some(secs * 1000)).unwrap()
        )
    };
    // Four minutes ahead is within the bound (a client clock a little fast is fine).
    let resp = app.post_metric(&at(now + 240, "soon")).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(stored_count(&server, "soon"), 1);
    // Ten minutes ahead is not.
    let (status, body) = json(app.post_metric(&at(now + 600, "later")).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("future"),
        "{body}"
    );
    assert!(!exists(&server, "metric:later"));
}

#[tokio::test]
async fn a_batch_with_one_future_item_is_refused_naming_it_and_stores_nothing() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let body = format!(
        "[{},{},{}]",
        r#"{"timestamp":"2025-01-01T10:00:00Z","value":1,"type":"batchcpu"}"#,
        r#"{"timestamp":"2025-01-01T10:00:01Z","value":2,"type":"batchcpu"}"#,
        FAR_FUTURE
    );
    let (status, resp) = json(app.post_batch(&body).await).await;
    assert_eq!(status, 422, "{resp}");
    let detail = resp["detail"].as_str().expect("detail");
    assert!(detail.starts_with("item 2: "), "{detail}");
    assert!(detail.contains("future"), "{detail}");
    assert!(!exists(&server, "metric:batchcpu"), "nothing stored");
    assert!(!exists(&server, "metric:future"), "nothing stored");
    assert!(!exists(&server, "ratelimit:127.0.0.1"), "no budget used");
}

// ---------------------------------------------------------------------------------------------
// Slow clients

/// The deadline of the contract; every bound below is generous around it.
const DEADLINE: Duration = Duration::from_secs(10);
/// By when the server must have answered and closed.
const CLOSED_BY: Duration = Duration::from_secs(15);

/// Redis is not needed to time a request out: the body is read before Redis is touched.
fn no_redis() -> tally_api::config::Config {
    config(&format!("redis://127.0.0.1:{}", free_port()))
}

async fn connect(app: &TestApp) -> (OwnedReadHalf, OwnedWriteHalf) {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr)
        .await
        .expect("connect to the API")
        .into_split()
}

/// Writes `pieces` one a second (the client under test), and keeps the write half open
/// afterwards so the server never sees the client give up. Stops at the first write error
/// (the server closed).
fn trickle(mut write: OwnedWriteHalf, pieces: Vec<Vec<u8>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for piece in pieces {
            if write.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    })
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent and when
/// it closed, measured from `since`. Fails if it is still open after `CLOSED_BY` + 5 s.
async fn read_until_closed(read: OwnedReadHalf, since: Instant) -> (String, Duration) {
    read_until_closed_within(read, since, CLOSED_BY + Duration::from_secs(5)).await
}

async fn read_until_closed_within(
    mut read: OwnedReadHalf,
    since: Instant,
    give_up: Duration,
) -> (String, Duration) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(give_up, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the connection is still open after {:?}; received {:?}",
            since.elapsed(),
            String::from_utf8_lossy(&received)
        )
    });
    (
        String::from_utf8_lossy(&received).into_owned(),
        since.elapsed(),
    )
}

fn bytes_each(s: &str) -> Vec<Vec<u8>> {
    s.bytes().map(|b| vec![b]).collect()
}

#[tokio::test]
async fn a_head_trickled_a_byte_a_second_gets_408_and_a_closed_connection_at_the_deadline() {
    let app = TestApp::spawn_with(no_redis()).await;
    let started = Instant::now();
    let (read, write) = connect(&app).await;
    let mut pieces = vec![b"POST /api/metrics HTTP/1.1\r\nHost: tally\r\n".to_vec()];
    // A header that never ends, a byte a second.
    pieces.extend(bytes_each(&format!("X-Slow: {}", "a".repeat(60))));
    let writer = trickle(write, pieces);
    let (received, closed_after) = read_until_closed(read, started).await;
    writer.abort();
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
    assert!(
        closed_after >= DEADLINE - Duration::from_secs(1),
        "not before the deadline: {closed_after:?} ({received})"
    );
    assert!(closed_after < CLOSED_BY, "closed after {closed_after:?}");
}

#[tokio::test]
async fn a_body_trickled_a_byte_a_second_gets_408_and_a_closed_connection() {
    let app = TestApp::spawn_with(no_redis()).await;
    let started = Instant::now();
    let (read, write) = connect(&app).await;
    let mut pieces = vec![b"POST /api/metrics HTTP/1.1\r\nHost: tally\r\n\
          Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        .to_vec()];
    pieces.extend(bytes_each(&" ".repeat(100)));
    let writer = trickle(write, pieces);
    let (received, closed_after) = read_until_closed(read, started).await;
    writer.abort();
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(
        received.to_ascii_lowercase().contains("connection: close"),
        "{received}"
    );
    assert!(
        received.contains(r#"{"detail":"Request timed out"#),
        "{received}"
    );
    assert!(
        closed_after >= DEADLINE - Duration::from_secs(1),
        "not before the deadline: {closed_after:?}"
    );
    assert!(closed_after < CLOSED_BY, "closed after {closed_after:?}");
}

#[tokio::test]
async fn a_chunked_body_trickled_a_chunk_a_second_gets_408_and_a_closed_connection() {
    let app = TestApp::spawn_with(no_redis()).await;
    let started = Instant::now();
    let (read, write) = connect(&app).await;
    let mut pieces = vec![b"POST /api/metrics/batch HTTP/1.1\r\nHost: tally\r\n\
          Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec()];
    pieces.extend((0..100).map(|_| b"1\r\n \r\n".to_vec()));
    let writer = trickle(write, pieces);
    let (received, closed_after) = read_until_closed(read, started).await;
    writer.abort();
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(closed_after < CLOSED_BY, "closed after {closed_after:?}");
}

#[tokio::test]
async fn a_route_that_answers_before_a_trickled_chunked_body_ends_closes_the_connection() {
    // /external reads no body: it answers at once, and the connection is closed rather than
    // kept open to drain a body that is still trickling.
    let app = TestApp::spawn_with(no_redis()).await;
    let started = Instant::now();
    let (read, write) = connect(&app).await;
    let mut pieces = vec![b"GET /external HTTP/1.1\r\nHost: tally\r\n\
          Transfer-Encoding: chunked\r\n\r\n"
        .to_vec()];
    pieces.extend((0..100).map(|_| b"1\r\n \r\n".to_vec()));
    let writer = trickle(write, pieces);
    let (received, closed_after) = read_until_closed(read, started).await;
    writer.abort();
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(closed_after < CLOSED_BY, "closed after {closed_after:?}");
}

#[tokio::test]
async fn a_slow_but_complete_request_within_the_deadline_is_served() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let started = Instant::now();
    let (read, write) = connect(&app).await;
    let body = r#"{"timestamp":"2025-01-01T10:00:00Z","value":75,"type":"slowcpu"}"#;
    let head = format!(
        "POST /api/metrics HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The head in two pieces and the body in three, a second apart: about 4 s in all.
    let (h1, h2) = head.split_at(20);
    let (b1, rest) = body.split_at(20);
    let (b2, b3) = rest.split_at(20);
    let writer = trickle(
        write,
        [h1, h2, b1, b2, b3]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
    );
    let (received, closed_after) = read_until_closed(read, started).await;
    writer.abort();
    assert!(received.starts_with("HTTP/1.1 201"), "{received}");
    assert!(closed_after < DEADLINE, "{closed_after:?}");
    assert_eq!(stored_count(&server, "slowcpu"), 1);
}

#[tokio::test]
async fn a_later_request_on_a_kept_alive_connection_has_its_own_deadline() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let started = Instant::now();
    let (read, write) = connect(&app).await;
    let body = r#"{"timestamp":"2025-01-01T10:00:00Z","value":75,"type":"kacpu"}"#;
    let first = format!(
        "POST /api/metrics HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let second = "POST /api/metrics HTTP/1.1\r\nHost: tally\r\n\
        Content-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    let mut pieces = vec![first.into_bytes(), second.as_bytes().to_vec()];
    pieces.extend(bytes_each(&" ".repeat(100)));
    let writer = trickle(write, pieces);
    let (received, closed_after) = read_until_closed(read, started).await;
    writer.abort();
    assert!(received.starts_with("HTTP/1.1 201"), "{received}");
    let second_answer = &received[received.find("HTTP/1.1 408").expect(&received)..];
    assert!(second_answer.contains("Request timed out"), "{received}");
    // The second head was complete about 1 s in; its body had until about 11 s.
    assert!(
        closed_after >= DEADLINE - Duration::from_secs(1),
        "{closed_after:?}"
    );
    assert!(
        closed_after < CLOSED_BY + Duration::from_secs(1),
        "{closed_after:?}"
    );
    assert_eq!(stored_count(&server, "kacpu"), 1);
}

#[tokio::test]
async fn a_later_head_trickled_on_a_kept_alive_connection_is_cut_off() {
    // actix times only a connection's first head; after a complete first request, the head of
    // the next one trickles in a byte a second. The connection is closed once it has had no
    // request in progress for the keep-alive time (5 s) plus the deadline (10 s).
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let (mut read, mut write) = connect(&app).await;
    let body = r#"{"timestamp":"2025-01-01T10:00:00Z","value":75,"type":"kahead"}"#;
    let first = format!(
        "POST /api/metrics HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    write.write_all(first.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("stored successfully") {
        let n = read.read(&mut buf).await.expect("read the first answer");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 201"));
    let answered = Instant::now();
    let mut pieces = vec![b"GET /health HTTP/1.1\r\n".to_vec()];
    pieces.extend(bytes_each(&format!("X-Slow: {}", "a".repeat(60))));
    let writer = trickle(write, pieces);
    let (received, closed_after) =
        read_until_closed_within(read, answered, Duration::from_secs(30)).await;
    writer.abort();
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
    assert!(closed_after >= DEADLINE, "{closed_after:?}");
    assert!(
        closed_after < DEADLINE + Duration::from_secs(10),
        "{closed_after:?}"
    );
    assert_eq!(stored_count(&server, "kahead"), 1);
}
