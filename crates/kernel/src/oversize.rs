//! `431 Request Header Fields Too Large` as problem+json, then a clean close.
//!
//! hyper refuses an HTTP/1 request head that outgrows its read buffer (about 400 KiB: hyper's
//! `max_buf_size`, which `axum::serve` leaves at its default) or carries more than 100
//! header fields: it writes a bare `431` head (`content-length: 0`), shuts the connection
//! and returns `Parse(TooLarge)` to whoever drives the connection — the service never sees the
//! request. Two things go wrong with that for a client: the answer has no body in the
//! platform's error shape, and the socket is closed with the rest of the oversized head
//! unread, so the kernel answers the client's remaining bytes with a reset that usually
//! destroys the 431 before the client reads it (a 1 MB `Authorization` header: "connection
//! closed without an answer").
//!
//! [`GuardedListener`] wraps every accepted connection in [`Guarded`], which replaces hyper's
//! own 431 by the platform's problem+json ([`HEADERS_TOO_LARGE_BODY`], `Connection: close`)
//! and, on shutdown, half-closes and reads (and drops) what the client still sends, for at
//! most [`LINGER`], so that the answer arrives. A 431 the service itself answers (the
//! gateway passing on an upstream's) is left alone: the host counts those per connection
//! ([`ConnState::app_answered_431`]) and hyper writes responses in order, so a 431 head
//! written while none is counted is hyper's.

use std::{
    future::Future,
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The problem+json body of the 431 answer: the shape of `plt_contracts::Problem`, with the
/// code the platform's error table gives status 431 (`invalid_argument`: a client error
/// without a code of its own).
pub const HEADERS_TOO_LARGE_BODY: &str = concat!(
    r#"{"type":"urn:plt:problem:invalid_argument","#,
    r#""title":"Request header fields too large","status":431,"#,
    r#""detail":"the request's header fields are larger than this server accepts","#,
    r#""code":"invalid_argument"}"#
);

/// How long a refused connection keeps reading what the client still sends before closing.
pub const LINGER: Duration = Duration::from_secs(2);

/// The status line hyper writes for an oversized head.
const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";

/// What the host and the connection's IO share.
#[derive(Debug, Default)]
pub struct ConnState {
    app_431: AtomicUsize,
}

impl ConnState {
    /// The service answered a request on this connection with 431 (its head is still to
    /// be written, and must be written as it is).
    pub fn app_answered_431(&self) {
        self.app_431.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a 431 head being written now is the service's (and counts it off).
    fn take_app_431(&self) -> bool {
        self.app_431
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// An `axum::serve` listener whose connections are [`Guarded`].
pub struct GuardedListener<L> {
    inner: L,
}

impl<L> GuardedListener<L> {
    pub fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<L> axum::serve::Listener for GuardedListener<L>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    type Io = Guarded<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (Guarded::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection's IO, answering hyper's oversized-head refusal as described in the
/// module documentation.
pub struct Guarded<IO> {
    inner: IO,
    state: Arc<ConnState>,
    /// The replacement answer and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    /// Set once the replacement was sent and the write side shut: reading out the rest.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Guarded<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            state: Arc::default(),
            answer: None,
            linger: None,
        }
    }

    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

/// The answer replacing hyper's bare 431 head `head`, keeping its `date` line.
fn answer(head: &[u8]) -> Vec<u8> {
    let date = head
        .split(|b| *b == b'\n')
        .find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"date:"))
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut out = Vec::with_capacity(256 + HEADERS_TOO_LARGE_BODY.len());
    out.extend_from_slice(HYPER_431);
    out.extend_from_slice(b"content-type: application/problem+json\r\n");
    out.extend_from_slice(
        format!("content-length: {}\r\n", HEADERS_TOO_LARGE_BODY.len()).as_bytes(),
    );
    out.extend_from_slice(b"connection: close\r\n");
    if let Some(date) = date {
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(HEADERS_TOO_LARGE_BODY.as_bytes());
    out
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Whether `buf` (the first buffer of a write, where hyper starts a response head) is
    /// hyper's own 431: any 431 head counts off one of the service's first; with none of
    /// those pending, a whole bodiless head is hyper's.
    fn is_hypers_431(&self, buf: &[u8]) -> bool {
        if !buf.starts_with(b"HTTP/1.1 431 ") || self.state.take_app_431() {
            return false;
        }
        buf.starts_with(HYPER_431) && buf.ends_with(b"\r\n\r\n") && buf.len() < 512
    }

    /// Writes what is left of the replacement answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.answer {
            if *done == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_answer(cx))?;
        if self.answer.is_none() && self.is_hypers_431(buf) {
            self.answer = Some((answer(buf), 0));
            // Sent from here on; hyper's head counts as written.
            let _ = self.poll_answer(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_answer(cx))?;
        if self.answer.is_none()
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && self.is_hypers_431(first)
        {
            let len = first.len();
            self.answer = Some((answer(first), 0));
            let _ = self.poll_answer(cx)?;
            return Poll::Ready(Ok(len));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        if self.answer.is_none() {
            return Pin::new(&mut self.inner).poll_shutdown(cx);
        }
        // Refused: half-close, then read out what the client still sends (until it closes,
        // or LINGER), so that closing does not reset the connection under the answer.
        if self.linger.is_none() {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 8192];
        loop {
            if let Some(t) = &mut self.linger
                && t.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_problem_json_with_hypers_date() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 10:00:00 GMT\r\n\r\n";
        let a = String::from_utf8(answer(head)).unwrap();
        let (h, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(h.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(h.contains("content-type: application/problem+json"));
        assert!(h.contains("connection: close"));
        assert!(h.contains("date: Mon, 07 Dec 2026 10:00:00 GMT"));
        assert!(h.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert_eq!(v["code"], "invalid_argument");
        assert_eq!(v["type"], "urn:plt:problem:invalid_argument");
    }

    #[test]
    fn a_431_of_the_service_is_not_replaced() {
        let g = Guarded::new(tokio::io::sink());
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        g.state().app_answered_431();
        assert!(!g.is_hypers_431(head), "the service's own 431");
        assert!(g.is_hypers_431(head), "none of the service's left: hyper's");
        assert!(!g.is_hypers_431(b"HTTP/1.1 200 OK\r\n\r\n"));
        // The service's 431 with its body in the same buffer is counted off as well.
        g.state().app_answered_431();
        assert!(!g.is_hypers_431(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 2\r\n\r\nno"
        ));
        assert!(g.is_hypers_431(head));
    }
}
