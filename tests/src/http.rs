//! HTTP for the tests, in one place: a plain blocking GET over a socket (start-up probes, no
//! runtime needed), raw bytes over TCP (malformed requests), and a bounded `reqwest` client
//! with the helpers that read what it got back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on every request the fault suites send: the API's Redis timeout is 1 s
/// (`REDIS_TIMEOUT_MS`), so an answer later than this is a hang.
pub const REQUEST_BOUND: Duration = Duration::from_secs(3);

/// `GET path` on 127.0.0.1:`port` over a plain blocking socket: (status, body), or None if
/// nothing answered (refused, reset, or silent for 5 s).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// The status of `GET path` (see [`get`]).
pub fn get_status(port: u16, path: &str) -> Option<u16> {
    get(port, path).map(|(status, _)| status)
}

/// Sends `bytes` on a new connection to 127.0.0.1:`port`, closes the write side, and reads
/// until the server closes: Ok(what it sent back), Err if it was still open after `bound`.
pub async fn raw_exchange(port: u16, bytes: &[u8], bound: Duration) -> Result<Vec<u8>, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to {port}: {e}"))?;
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut buf = Vec::new();
    match tokio::time::timeout(bound, s.read_to_end(&mut buf)).await {
        Ok(_) => Ok(buf),
        Err(_) => Err(format!(
            "still open after {bound:?}, got {:?}",
            String::from_utf8_lossy(&buf)
        )),
    }
}

/// The status of a raw HTTP answer ("closed" when there was none).
pub fn raw_status(answer: &[u8]) -> String {
    String::from_utf8_lossy(&answer[..answer.len().min(12)])
        .split_whitespace()
        .nth(1)
        .unwrap_or("closed")
        .to_string()
}

/// A client whose every request (connect included) must finish within `bound`.
pub fn client_within(bound: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(bound)
        .connect_timeout(bound)
        .build()
        .expect("client")
}

/// A client whose every request must finish within [`REQUEST_BOUND`].
pub fn client() -> reqwest::Client {
    client_within(REQUEST_BOUND)
}

/// One answered request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub took: Duration,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {:?}", self.status, self.body))
    }
}

/// Sends `req`; Err describes a transport failure (reset, timeout, refused).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Reply, String> {
    let started = Instant::now();
    let res = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let body = res.text().await.map_err(|e| format!("body: {e:?}"))?;
    Ok(Reply {
        status,
        body,
        took: started.elapsed(),
    })
}

/// Status and JSON body.
pub async fn json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// A response header as text.
pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_string())
}

/// `r` of the `RateLimit` header: the budget left after this request.
pub fn remaining(resp: &reqwest::Response) -> u64 {
    let value = header(resp, "ratelimit").expect("RateLimit header");
    let r = value
        .split(';')
        .find_map(|p| p.strip_prefix("r="))
        .expect("r=");
    r.parse().expect("integer r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_reads_the_status_and_body_and_none_when_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.1"));
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown")
                .unwrap();
        });
        assert_eq!(get(port, "/health"), Some((503, "down".to_string())));
        server.join().unwrap();
        assert_eq!(get_status(port, "/health"), None);
    }

    #[test]
    fn raw_status_is_the_second_word_or_closed() {
        assert_eq!(raw_status(b"HTTP/1.1 400 Bad Request\r\n"), "400");
        assert_eq!(raw_status(b""), "closed");
    }
}
