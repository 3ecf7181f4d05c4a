//! The gateway's own HTTP/1.1 client for requests whose body is in memory (the common case:
//! no body, or a small one kept for retries). The request's task writes the request and
//! reads the answer on a pooled keep-alive connection itself: no connection task, no
//! channel between tasks, one write per request. A response that has arrived whole (or a
//! small one of known length) is handed on as one buffer and its connection goes straight
//! back to the pool; anything else (chunked, large, or delimited by the connection's end)
//! is streamed from the connection as the client reads it, and the connection returns to
//! the pool when its body has been read to the end.
//!
//! Strict on what comes back: a malformed head, a bad `Content-Length` (or several that
//! disagree), a bad chunk size, a head over 64 KiB or more than 100 header fields is an
//! error and the connection is closed. An idle connection the upstream has closed is
//! noticed when it is taken from the pool (no syscall when nothing has happened on it);
//! one that closes as the request is written is retried once on a new connection when
//! the method is idempotent.
//!
//! Idle connections are kept per host worker thread ([`plt_kernel::worker_index`]): a
//! connection is registered with the runtime of the thread that opened it, and is reused
//! there, so that its readiness never crosses threads.
//!
//! An instance that serves TLS ([`ConnPool::with_tls`]) is reached over TLS with the
//! process's outbound TLS (`plt_kernel::tls`), ALPN `http/1.1`.

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};
use http_body::{Frame, SizeHint};
use plt_kernel::tls::{Alpn, ClientTls, Stream};
use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The longest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// A body of known length up to this size is read before the response is handed on.
const READ_WHOLE: u64 = 64 * 1024;
/// Idle connections kept per upstream instance and worker thread.
const MAX_IDLE: usize = 256;
/// Idle lists per upstream instance: worker threads beyond this share them (round robin).
const SLOTS: usize = 16;

/// Why a request failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: the request was not sent.
    Connect(io::Error),
    /// The connection failed while the request was sent or its answer awaited: it may have
    /// been processed.
    Io(io::Error),
    /// The answer was not valid HTTP/1.1.
    Protocol(&'static str),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connecting: {e}"),
            SendError::Io(e) => write!(f, "connection failed: {e}"),
            SendError::Protocol(m) => write!(f, "invalid response: {m}"),
        }
    }
}

struct Conn {
    io: Stream,
    /// Bytes read and not yet used.
    buf: BytesMut,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The keep-alive connections to one upstream instance.
pub struct ConnPool {
    authority: http::uri::Authority,
    /// Per worker thread (index modulo `SLOTS`).
    idle: [Mutex<Vec<Idle>>; SLOTS],
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// TLS to the instance, when it serves TLS.
    tls: Option<ClientTls>,
}

impl ConnPool {
    /// Plaintext connections to `authority`.
    pub fn new(
        authority: http::uri::Authority,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Self::build(authority, None, connect_timeout, idle_timeout)
    }

    /// TLS connections to `authority` (its host is the name its certificate must carry).
    pub fn with_tls(
        authority: http::uri::Authority,
        tls: ClientTls,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Self::build(authority, Some(tls), connect_timeout, idle_timeout)
    }

    fn build(
        authority: http::uri::Authority,
        tls: Option<ClientTls>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            authority,
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            connect_timeout,
            idle_timeout,
            tls,
        })
    }

    /// This thread's idle connections.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle[plt_kernel::worker_index() % SLOTS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection that is still usable, newest first.
    fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle();
        while let Some(Idle { conn, since }) = idle.pop() {
            if now.duration_since(since) > self.idle_timeout {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let port = self.authority.port_u16().ok_or_else(|| {
            SendError::Connect(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: no port", self.authority),
            ))
        })?;
        let io = Stream::connect(
            self.authority.host(),
            port,
            self.tls.as_ref().map(|t| (t, Alpn::Http1)),
            Some(self.connect_timeout),
        )
        .await
        .map_err(SendError::Connect)?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
        })
    }

    /// Sends one request with an in-memory `body` and reads the response head; the body
    /// follows as the response's body. `extra` are headers added after `headers`.
    pub async fn send(
        self: &Arc<Self>,
        method: &Method,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        extra: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Result<Response<Body>, SendError> {
        let request = encode(
            method,
            path_and_query,
            &self.authority,
            headers,
            extra,
            body,
        );
        if let Some(conn) = self.checkout() {
            match self.exchange(conn, method, &request).await {
                // The upstream closed the connection before answering, as it was reused: an
                // idempotent request may go again, on a new connection.
                Err(Exchange::ClosedEarly(e)) if method.is_idempotent() => {
                    tracing::debug!(error = %e, "pooled upstream connection was closed; reconnecting");
                }
                Err(Exchange::ClosedEarly(e)) => return Err(SendError::Io(e)),
                Err(Exchange::Failed(e)) => return Err(e),
                Ok(r) => return Ok(r),
            }
        }
        let conn = self.connect().await?;
        match self.exchange(conn, method, &request).await {
            Ok(r) => Ok(r),
            Err(Exchange::ClosedEarly(e)) => Err(SendError::Io(e)),
            Err(Exchange::Failed(e)) => Err(e),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        method: &Method,
        request: &[u8],
    ) -> Result<Response<Body>, Exchange> {
        if let Err(e) = conn.io.write_all(request).await {
            return Err(Exchange::ClosedEarly(e));
        }
        let head = read_head(&mut conn).await?;
        let framing = framing(method, &head).map_err(Exchange::Failed)?;
        let mut reuse = head.keep_alive;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = head.status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = head.headers;
        match framing {
            Framing::Empty => {
                if !conn.buf.is_empty() {
                    reuse = false;
                }
                if reuse {
                    self.checkin(conn);
                }
            }
            Framing::Length(n) if n <= READ_WHOLE || conn.buf.len() as u64 >= n => {
                let n = n as usize;
                while conn.buf.len() < n {
                    conn.buf.reserve(n - conn.buf.len());
                    match conn.io.read_buf(&mut conn.buf).await {
                        Ok(0) => {
                            return Err(Exchange::Failed(SendError::Protocol(
                                "connection closed within the body",
                            )));
                        }
                        Ok(_) => {}
                        Err(e) => return Err(Exchange::Failed(SendError::Io(e))),
                    }
                }
                let data = conn.buf.split_to(n).freeze();
                if !conn.buf.is_empty() {
                    reuse = false;
                }
                if reuse {
                    self.checkin(conn);
                }
                *response.body_mut() = Body::from(data);
            }
            framing => {
                let state = match framing {
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::ChunkSize,
                    _ => State::UntilClose,
                };
                *response.body_mut() = Body::new(Streamed {
                    conn: Some(conn),
                    pool: self.clone(),
                    state,
                    reuse,
                });
            }
        }
        Ok(response)
    }
}

enum Exchange {
    /// Nothing came back before the connection ended (or the write failed).
    ClosedEarly(io::Error),
    Failed(SendError),
}

/// Whether an idle connection is still good: nothing has happened on it (the usual case,
/// known without a syscall), or a read finds nothing to read. Anything read (an early
/// answer, the end of the stream) makes it unusable.
fn usable(conn: &Conn) -> bool {
    if !conn.buf.is_empty() {
        return false;
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let tcp = conn.io.tcp();
    match tcp.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            // Over TLS, a peek: anything that arrived (a close_notify alert, a late answer,
            // the end of the stream) makes it unusable; nothing (Pending) leaves the session
            // undisturbed.
            if conn.io.is_tls() {
                let mut buf = tokio::io::ReadBuf::new(&mut probe);
                return tcp.poll_peek(&mut cx, &mut buf).is_pending();
            }
            matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// The request's bytes: head, then the body.
fn encode(
    method: &Method,
    path_and_query: &str,
    authority: &http::uri::Authority,
    headers: &[(HeaderName, HeaderValue)],
    extra: &[(HeaderName, HeaderValue)],
    body: &Bytes,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + headers.len() * 48 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut field = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    let mut had_length = false;
    for (name, value) in headers.iter().chain(extra) {
        // Framing is this client's: the body is sent with its exact length.
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if name == header::HOST || name == header::TRANSFER_ENCODING {
            continue;
        }
        field(name, value);
    }
    let declares_body = !body.is_empty()
        || had_length
        || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if declares_body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    keep_alive: bool,
}

/// Reads up to the end of a final (non-1xx) response head, leaving what follows in the
/// buffer.
async fn read_head(conn: &mut Conn) -> Result<Head, Exchange> {
    let mut received_any = false;
    loop {
        if !conn.buf.is_empty() {
            received_any = true;
            match parse_head(&conn.buf).map_err(Exchange::Failed)? {
                Some((len, head)) => {
                    conn.buf.advance(len);
                    match head {
                        Some(head) => return Ok(head),
                        // 100 Continue, 102, 103: the final answer follows.
                        None => continue,
                    }
                }
                None if conn.buf.len() > MAX_HEAD => {
                    return Err(Exchange::Failed(SendError::Protocol(
                        "response head too large",
                    )));
                }
                None => {}
            }
        }
        conn.buf.reserve(4096);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) if !received_any => {
                return Err(Exchange::ClosedEarly(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before any response",
                )));
            }
            Ok(0) => {
                return Err(Exchange::Failed(SendError::Protocol(
                    "connection closed within the response head",
                )));
            }
            Ok(_) => {}
            Err(e)
                if !received_any
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(Exchange::ClosedEarly(e));
            }
            Err(e) => return Err(Exchange::Failed(SendError::Io(e))),
        }
    }
}

/// `Ok(None)`: more bytes are needed. `Ok(Some((len, None)))`: an interim (1xx) head of
/// `len` bytes. `Ok(Some((len, Some(head))))`: the final head.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Option<Head>)>, SendError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut fields);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::Protocol("too many header fields"));
        }
        Err(_) => return Err(SendError::Protocol("malformed response head")),
    };
    let code = r.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| SendError::Protocol("bad status"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(SendError::Protocol("protocol switch not supported"));
    }
    if status.is_informational() {
        return Ok(Some((len, None)));
    }
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    let mut keep_alive = r.version == Some(1);
    for f in r.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| SendError::Protocol("bad header name"))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| SendError::Protocol("bad header value"))?;
        if name == header::CONNECTION {
            for token in f.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && r.version == Some(0) {
                    keep_alive = true;
                }
            }
        }
        headers.append(name, value);
    }
    Ok(Some((
        len,
        Some(Head {
            status,
            headers,
            keep_alive,
        }),
    )))
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(method: &Method, head: &Head) -> Result<Framing, SendError> {
    let s = head.status;
    if *method == Method::HEAD || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if let Some(te) = head
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = te.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b"");
        return Ok(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length: Option<u64> = None;
    for v in head.headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(SendError::Protocol("bad content-length"));
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or(SendError::Protocol("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(SendError::Protocol("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// Where a streamed body is.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// This many bytes are left.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk are left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields (ignored) up to an empty line.
    Trailers,
    /// Until the connection ends.
    UntilClose,
    Done,
}

/// A response body read from its connection as the client reads it.
struct Streamed {
    conn: Option<Conn>,
    pool: Arc<ConnPool>,
    state: State,
    reuse: bool,
}

/// One step of decoding what is in `buf`: a data frame, the end, or `None` for more bytes.
fn decode(state: &mut State, buf: &mut BytesMut) -> Result<Option<Option<Bytes>>, SendError> {
    loop {
        match state {
            State::Done => return Ok(Some(None)),
            State::Length(0) => {
                *state = State::Done;
            }
            State::Length(left) | State::ChunkData(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                let data = buf.split_to(n).freeze();
                if *left == 0 && matches!(state, State::ChunkData(_)) {
                    *state = State::ChunkEnd;
                }
                return Ok(Some(Some(data)));
            }
            State::UntilClose => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Some(buf.split().freeze())));
            }
            State::ChunkSize => {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > 4096 {
                        return Err(SendError::Protocol("chunk size line too long"));
                    }
                    return Ok(None);
                };
                let line = &buf[..end];
                let size = line
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or(b"")
                    .trim_ascii();
                if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                    return Err(SendError::Protocol("bad chunk size"));
                }
                let n = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or(SendError::Protocol("bad chunk size"))?;
                buf.advance(end + 2);
                *state = if n == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(n)
                };
            }
            State::ChunkEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(SendError::Protocol("chunk not followed by CRLF"));
                }
                buf.advance(2);
                *state = State::ChunkSize;
            }
            State::Trailers => {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > MAX_HEAD {
                        return Err(SendError::Protocol("trailers too large"));
                    }
                    return Ok(None);
                };
                buf.advance(end + 2);
                if end == 0 {
                    *state = State::Done;
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl Streamed {
    /// The body is complete: the connection goes back to the pool when it can be reused.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reuse
            && conn.buf.is_empty()
        {
            self.pool.checkin(conn);
        }
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match decode(&mut this.state, &mut conn.buf) {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(axum::Error::new(e.to_string()))));
                }
                Ok(Some(Some(data))) => {
                    if this.state == State::Length(0) || this.state == State::Done {
                        this.state = State::Done;
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(None)) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            conn.buf.reserve(8 * 1024);
            let read = {
                let mut io = Pin::new(&mut conn.io);
                tokio_util::io::poll_read_buf(io.as_mut(), cx, &mut conn.buf)
            };
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if this.state == State::UntilClose {
                        this.state = State::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    this.conn = None;
                    return Poll::Ready(Some(Err(axum::Error::new(
                        "upstream closed the connection within the body",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(axum::Error::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Ok(Some((_, Some(h)))) => h,
            _ => panic!("not a final head: {text:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        assert_eq!(
            framing(&get, &head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n")).unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n")
            )
            .unwrap(),
            Framing::Length(3)
        );
        assert!(
            framing(
                &get,
                &head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n")
            )
            .is_err()
        );
        assert!(framing(&get, &head("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n")).is_err());
        assert!(framing(&get, &head("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n")).is_err());
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n\r\n")
            )
            .unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            framing(&get, &head("HTTP/1.1 200 OK\r\n\r\n")).unwrap(),
            Framing::UntilClose
        );
        assert_eq!(
            framing(
                &get,
                &head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n")
            )
            .unwrap(),
            Framing::Empty
        );
        assert_eq!(
            framing(
                &Method::HEAD,
                &head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n")
            )
            .unwrap(),
            Framing::Empty
        );
    }

    #[test]
    fn heads_interim_partial_and_keep_alive() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok(None)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
            Ok(Some((25, None)))
        ));
        assert!(parse_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        assert!(parse_head(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\n\r\n").keep_alive);
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x-a: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse_head(many.as_bytes()).is_err());
    }

    fn decode_all(state: State, input: &[u8]) -> Result<(Vec<u8>, bool), SendError> {
        let mut state = state;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Byte by byte: every split point is exercised.
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(step) = decode(&mut state, &mut buf)? {
                match step {
                    Some(d) => out.extend_from_slice(&d),
                    None => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies() {
        let (body, done) = decode_all(
            State::ChunkSize,
            b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-t: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(body, b"hello, world");
        assert!(done);
        assert!(decode_all(State::ChunkSize, b"zz\r\n").is_err());
        assert!(decode_all(State::ChunkSize, b"3\r\nabcX\r\n").is_err());
        assert!(decode_all(State::ChunkSize, b"1111111111111111\r\n").is_err());
        let (body, done) = decode_all(State::ChunkSize, b"3\r\nabc\r\n").unwrap();
        assert_eq!((body.as_slice(), done), (b"abc".as_slice(), false));
    }

    #[test]
    fn requests_are_framed_by_their_body() {
        let auth: http::uri::Authority = "127.0.0.1:9".parse().unwrap();
        let h = [
            (header::CONTENT_LENGTH, HeaderValue::from_static("999")),
            (header::HOST, HeaderValue::from_static("evil")),
            (
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1"),
            ),
        ];
        let extra = [(
            HeaderName::from_static("x-plt-timeout-ms"),
            HeaderValue::from_static("50"),
        )];
        let out = encode(
            &Method::POST,
            "/v1/x?q=1",
            &auth,
            &h,
            &extra,
            &Bytes::from("abc"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/x?q=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-a: 1\r\nx-plt-timeout-ms: 50\r\ncontent-length: 3\r\n\r\nabc"
        );
        let out = encode(&Method::GET, "/", &auth, &[], &[], &Bytes::new());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n"
        );
    }
}
