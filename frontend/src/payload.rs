//! Request bodies: the JSON content-type check (415), the per-route size limit (413), the
//! metric object's validation (422, naming the field), and the deadline by which a request's
//! body must have arrived (408). Everything here runs before Redis is touched, so an invalid
//! request stores nothing and uses no rate-limit budget.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::Write;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{self, Extensions, Service, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::ConnectionType;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{detail_response, ApiError};

/// Body limit of `POST /api/metrics` (one small object).
pub const METRIC_BODY_LIMIT: usize = 64 * 1024;

/// Longest metric type (bytes); the type becomes part of a Redis key.
pub const MAX_TYPE_LEN: usize = 256;

/// How far after the API's clock a metric timestamp may be (5 minutes, the module's bound on
/// `METRIC.ADD ... TS` too): a sample from further ahead would blank the series' windows.
pub const MAX_FUTURE_MS: u64 = 300_000;

/// One validated metric.
pub use crate::store::Metric;

/// True for `application/json` and `application/<anything>+json`, parameters ignored.
fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    ty.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Reads a JSON body of at most `limit` bytes: 415 unless declared JSON, 413 as soon as it is
/// known to be larger (from `Content-Length`, or while streaming a chunked body).
pub async fn read_json(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// How long a request's head and body together may take to arrive. actix's
/// `client_request_timeout` (set to this too) covers the head of a connection's first request;
/// [`body_deadline`] covers the body; the [`Connection`] watchdog the head of a later request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long a kept-alive connection may sit idle between requests before actix closes it.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// One connection's timing, in its connection data (put there by [`Connection::on_connect`]).
#[derive(Debug)]
pub struct Connection {
    /// When it was accepted; its first request takes it, so that request's head and body share
    /// one deadline.
    start: Cell<Option<Instant>>,
    /// Since when no request has been in progress: set when a response is ready, cleared when
    /// the next request's head has arrived; `None` before the first request.
    idle_since: Cell<Option<Instant>>,
    /// A second handle on the socket, for the watchdog to close it; closed with this.
    socket: Option<std::net::TcpStream>,
}

impl Connection {
    /// For `HttpServer::on_connect`: records when the connection started and, for a TCP
    /// connection, starts its watchdog. actix times only the head of a connection's first
    /// request (`client_request_timeout`); once a kept-alive connection has received a byte of
    /// the next request, nothing would close it if the rest never came. The watchdog does: a
    /// connection with no request in progress [`KEEP_ALIVE`] + [`REQUEST_DEADLINE`] after its
    /// last response (idle that long, actix would have closed it already, so a head is being
    /// trickled) gets an empty 408 and is shut down.
    pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
        let socket = conn
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(|s| s.as_fd().try_clone_to_owned().ok())
            .map(std::net::TcpStream::from);
        let watched = socket.is_some();
        let connection = Rc::new(Connection {
            start: Cell::new(Some(Instant::now())),
            idle_since: Cell::new(None),
            socket,
        });
        if watched {
            actix_web::rt::spawn(watchdog(Rc::downgrade(&connection)));
        }
        data.insert(connection);
    }

    fn time_out(&self) {
        if let Some(socket) = &self.socket {
            log::info!(
                "closing a connection whose next request did not arrive within {} s",
                REQUEST_DEADLINE.as_secs()
            );
            // Best effort: the socket is non-blocking and nothing else is being written.
            let _ = (&*socket).write_all(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Watches one connection until it is gone (see [`Connection::on_connect`]); wakes at most
/// every [`REQUEST_DEADLINE`].
async fn watchdog(connection: Weak<Connection>) {
    let limit = KEEP_ALIVE + REQUEST_DEADLINE;
    loop {
        let Some(c) = connection.upgrade() else {
            return;
        };
        let next = match c.idle_since.get() {
            Some(since) if since.elapsed() >= limit => {
                c.time_out();
                return;
            }
            Some(since) => since + limit,
            None => Instant::now() + REQUEST_DEADLINE,
        };
        drop(c);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// A request's body and where it stands, shared by the body stream and [`body_deadline`].
struct RequestBody {
    payload: RefCell<dev::Payload>,
    /// The whole body arrived.
    complete: Cell<bool>,
    /// The deadline passed first.
    expired: Cell<bool>,
}

/// The request's body, ending in an error once `deadline` has passed before its end.
struct DeadlineBody {
    body: Rc<RequestBody>,
    deadline: Instant,
    /// Armed the first time the body is not ready, so a body that is already there (most of
    /// them) costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn expire(&self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.body.expired.set(true);
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the request body did not arrive in time",
        )))))
    }
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.body.complete.get() || self.body.expired.get() {
            return Poll::Ready(None);
        }
        // Checked before each chunk: a client trickling a byte at a time always has one ready.
        if Instant::now() >= self.deadline {
            return self.expire();
        }
        let next = self.body.payload.borrow_mut().poll_next_unpin(cx);
        match next {
            Poll::Ready(None) => self.body.complete.set(true),
            Poll::Ready(Some(_)) => {}
            Poll::Pending => {
                let deadline = self.deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                if timer.as_mut().poll(cx).is_ready() {
                    return self.expire();
                }
            }
        }
        next
    }
}

/// A response body that keeps the request's unfinished body alive until the response has been
/// written: actix then sees a body still arriving and closes the connection after the response
/// (without it, a chunked body is drained, for as long as the client keeps trickling it).
pub struct ResponseBody {
    inner: BoxBody,
    #[allow(dead_code)] // held, never read
    unfinished_request_body: Option<Rc<RequestBody>>,
}

impl MessageBody for ResponseBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }

    fn try_into_bytes(self) -> Result<Bytes, Self>
    where
        Self: Sized,
    {
        if self.unfinished_request_body.is_some() {
            return Err(self);
        }
        self.inner.try_into_bytes().map_err(|inner| ResponseBody {
            inner,
            unfinished_request_body: None,
        })
    }
}

/// Middleware: the body of a request must have arrived within [`REQUEST_DEADLINE`] of the
/// request's start (the connection's start for its first request, the end of the head for a
/// later one). Past it, the body reads as an error, the answer is 408 `{"detail": ...}`
/// whatever the handler made of the error, and the connection is closed. A handler that
/// answers before the whole body arrived also closes the connection (it is not drained).
pub fn body_deadline<S>(
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<ResponseBody>, actix_web::Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
    S::Future: 'static,
{
    let connection = req.conn_data::<Rc<Connection>>().cloned();
    if let Some(c) = &connection {
        c.idle_since.set(None);
    }
    let start = connection
        .as_ref()
        .and_then(|c| c.start.take())
        .unwrap_or_else(Instant::now);
    let body = match req.take_payload() {
        dev::Payload::None => None,
        payload => {
            let body = Rc::new(RequestBody {
                payload: RefCell::new(payload),
                complete: Cell::new(false),
                expired: Cell::new(false),
            });
            req.set_payload(dev::Payload::Stream {
                payload: Box::pin(DeadlineBody {
                    body: body.clone(),
                    deadline: start + REQUEST_DEADLINE,
                    timer: None,
                }),
            });
            Some(body)
        }
    };
    let response = srv.call(req);
    async move {
        let res = response.await;
        if let Some(c) = &connection {
            c.idle_since.set(Some(Instant::now()));
        }
        let mut res = res?;
        let mut unfinished = None;
        if let Some(body) = body {
            if body.expired.get() {
                let (req, _) = res.into_parts();
                log::info!(
                    "{} {}: 408, the body did not arrive within {} s",
                    req.method(),
                    req.path(),
                    REQUEST_DEADLINE.as_secs()
                );
                let mut timeout = detail_response(
                    HttpResponse::RequestTimeout(),
                    &format!(
                        "Request timed out: the request did not arrive within {} s",
                        REQUEST_DEADLINE.as_secs()
                    ),
                );
                timeout
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
                res = ServiceResponse::new(req, timeout);
            }
            if !body.complete.get() {
                unfinished = Some(body);
            }
        }
        Ok(res.map_body(|_, inner| ResponseBody {
            inner,
            unfinished_request_body: unfinished,
        }))
    }
}

/// The fields as raw JSON, so each one is checked on its own and the error names it.
#[derive(Deserialize)]
struct RawMetric<'a> {
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
}

/// Parses and validates a `POST /api/metrics` body. The error text is the 422 `detail`.
pub fn parse_metric(body: &[u8]) -> Result<Metric, String> {
    let raw: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    metric_from_raw(raw)
}

/// Validates one metric object (a batch item uses this too), against the API's clock.
pub fn metric_from_raw(raw: &RawValue) -> Result<Metric, String> {
    metric_from_raw_at(raw, now_ms())
}

/// The API's clock, unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`metric_from_raw`] with the clock given: a timestamp more than [`MAX_FUTURE_MS`] after
/// `now_ms` is refused.
fn metric_from_raw_at(raw: &RawValue, now_ms: u64) -> Result<Metric, String> {
    if !raw.get().trim_start().starts_with('{') {
        return Err("the body must be a JSON object".to_string());
    }
    let fields: RawMetric<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("malformed JSON: {e}"))?;
    let value = field(fields.value, "value")?;
    let value = serde_json::from_str::<f64>(value.get())
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            if value
                .get()
                .trim_start()
                .starts_with(|c: char| c == '-' || c.is_ascii_digit())
            {
                "value must be a finite number (it is out of range)".to_string()
            } else {
                "value must be a number".to_string()
            }
        })?;
    let kind = serde_json::from_str::<String>(field(fields.kind, "type")?.get())
        .map_err(|_| "type must be a string".to_string())?;
    if kind.trim().is_empty() {
        return Err("type must not be empty".to_string());
    }
    if kind.len() > MAX_TYPE_LEN {
        return Err(format!("type must be at most {MAX_TYPE_LEN} bytes"));
    }
    let ts_text = serde_json::from_str::<String>(field(fields.timestamp, "timestamp")?.get())
        .map_err(|_| "timestamp must be an ISO 8601 / RFC 3339 string".to_string())?;
    let ts_ms = parse_timestamp(&ts_text)?;
    if ts_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(format!(
            "timestamp {:?} is in the future: at most {} minutes after the server's clock ({}) is accepted",
            ts_text.trim(),
            MAX_FUTURE_MS / 60_000,
            rfc3339_ms(now_ms),
        ));
    }
    Ok(Metric { kind, value, ts_ms })
}

fn field<'a>(v: Option<&'a RawValue>, name: &str) -> Result<&'a RawValue, String> {
    match v {
        Some(v) if v.get() != "null" => Ok(v),
        _ => Err(format!("field required: {name}")),
    }
}

/// Unix ms as RFC 3339 UTC, for messages.
fn rfc3339_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms"),
            |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// ISO 8601 / RFC 3339 to unix milliseconds. Without an offset the time is UTC; a bare date is
/// midnight UTC. Before 1970 is refused.
pub fn parse_timestamp(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let ms = if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        dt.timestamp_millis()
    } else if let Ok(dt) = s.parse::<NaiveDateTime>() {
        // `2025-01-01T10:00:00[.fff]`, the common form without an offset, without
        // interpreting a format string.
        dt.and_utc().timestamp_millis()
    } else if let Some(dt) = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        dt.timestamp_millis()
    } else if let Some(dt) = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    {
        dt.and_utc().timestamp_millis()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .map_or(-1, |dt| dt.and_utc().timestamp_millis())
    } else {
        return Err(format!(
            "timestamp {s:?} is not an ISO 8601 / RFC 3339 date-time (e.g. 2025-01-01T10:00:00Z)"
        ));
    };
    u64::try_from(ms).map_err(|_| "timestamp must not be before 1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Metric, String> {
        parse_metric(body.as_bytes())
    }

    #[test]
    fn the_documented_example_is_valid_and_means_utc() {
        let m = parse(r#"{"timestamp":"2025-01-01T10:00:00","value":75,"type":"cpu"}"#).unwrap();
        assert_eq!(
            m,
            Metric {
                kind: "cpu".to_string(),
                value: 75.0,
                ts_ms: 1_735_725_600_000
            }
        );
    }

    #[test]
    fn timestamps_with_offsets_fractions_and_z_are_understood() {
        for (text, ms) in [
            ("2025-01-01T10:00:00Z", 1_735_725_600_000),
            ("2025-01-01T11:00:00+01:00", 1_735_725_600_000),
            ("2025-01-01T10:00:00.250Z", 1_735_725_600_250),
            ("2025-01-01 10:00:00", 1_735_725_600_000),
            ("2025-01-01T10:00:00.5", 1_735_725_600_500),
            ("2025-01-01T11:00:00+0100", 1_735_725_600_000),
            ("2025-01-01T10:00", 1_735_725_600_000),
            ("2025-01-01", 1_735_689_600_000),
            ("1970-01-01T00:00:00Z", 0),
        ] {
            assert_eq!(parse_timestamp(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn timestamps_before_1970_and_nonsense_are_refused() {
        assert!(parse_timestamp("1969-12-31T23:59:59Z")
            .unwrap_err()
            .contains("1970"));
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2025-13-01T00:00:00").is_err());
    }

    #[test]
    fn every_invalid_body_is_refused_with_the_field_named() {
        for (body, needle) in [
            ("{", "malformed JSON"),
            ("[1,2]", "object"),
            ("42", "object"),
            (r#"{"value":1,"type":"cpu"}"#, "timestamp"),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","type":"cpu"}"#,
                "value",
            ),
            (r#"{"timestamp":"2025-01-01T10:00:00","value":1}"#, "type"),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":null,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":"75","type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":true,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1e999,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":-1e999,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":""}"#,
                "type",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":"  "}"#,
                "type",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":7}"#,
                "type",
            ),
            (
                r#"{"timestamp":1735725600,"value":1,"type":"cpu"}"#,
                "timestamp",
            ),
            (
                r#"{"timestamp":"1960-01-01T00:00:00","value":1,"type":"cpu"}"#,
                "timestamp",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":"cpu""#,
                "malformed",
            ),
        ] {
            let err = parse(body).expect_err(body);
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    fn at(body: &str, now_ms: u64) -> Result<Metric, String> {
        let raw: &RawValue = serde_json::from_str(body).unwrap();
        metric_from_raw_at(raw, now_ms)
    }

    #[test]
    fn a_timestamp_up_to_five_minutes_ahead_of_the_clock_is_accepted_and_no_further() {
        let now = 1_735_725_600_000; // 2025-01-01T10:00:00Z
        for (ts, ok) in [
            ("2025-01-01T10:00:00Z", true),
            ("2025-01-01T10:05:00Z", true),
            ("2025-01-01T10:05:00.001Z", false),
            ("2025-01-01T11:05:00+01:00", true),
            ("2025-01-01T11:05:01+01:00", false),
            ("2025-01-02", false),
            ("9999-12-31T23:59:59Z", false),
        ] {
            let body = format!(r#"{{"timestamp":"{ts}","value":1,"type":"cpu"}}"#);
            match at(&body, now) {
                Ok(m) => assert!(ok, "{ts} accepted as {}", m.ts_ms),
                Err(e) => {
                    assert!(!ok, "{ts} refused: {e}");
                    assert!(e.contains("timestamp") && e.contains("future"), "{ts}: {e}");
                    assert!(e.contains("2025-01-01T10:00:00Z"), "names the clock: {e}");
                }
            }
        }
    }

    #[test]
    fn the_far_future_is_refused_against_the_real_clock() {
        let err =
            parse(r#"{"timestamp":"9999-12-31T23:59:59Z","value":1,"type":"cpu"}"#).unwrap_err();
        assert!(err.contains("future"), "{err}");
        // Now is fine: the check uses the API's own clock.
        let now = rfc3339_ms(now_ms());
        let body = format!(r#"{{"timestamp":"{now}","value":1,"type":"cpu"}}"#);
        assert!(parse(&body).is_ok(), "{body}");
    }

    #[test]
    fn extra_fields_are_ignored_and_escapes_are_decoded() {
        let m =
            parse(r#"{"timestamp":"2025-01-01T10:00:00Z","value":-0.5,"type":"c\u0070u","x":[1]}"#)
                .unwrap();
        assert_eq!((m.kind.as_str(), m.value), ("cpu", -0.5));
    }
}
