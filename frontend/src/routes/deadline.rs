//! The deadline by which a request's head and body must have arrived (408), and the watchdog
//! of kept-alive connections.

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
use actix_web::http::ConnectionType;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse};
use futures_util::{Stream, StreamExt};

use crate::routes::error::detail_response;

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
