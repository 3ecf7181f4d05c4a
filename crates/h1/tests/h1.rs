//! The gateway's HTTP/1.1 upstream client against scripted upstreams on raw TCP: every
//! framing, connection reuse, connections the upstream closes, and malformed answers.

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt as _;
use plt_h1::{ConnPool, SendError};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// What the scripted upstream does with each request on a connection: the bytes to answer
/// with, and whether to close the connection afterwards. `None`: close without answering.
type Script = Arc<dyn Fn(usize, &str) -> Option<(Vec<u8>, bool)> + Send + Sync>;

/// A raw upstream; counts accepted connections.
async fn upstream(script: Script) -> (ConnPoolFor, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            tokio::spawn(serve(sock, n, script));
        }
    });
    (
        ConnPoolFor(ConnPool::new(
            addr.to_string().parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(30),
        )),
        accepted,
    )
}

async fn serve(mut sock: TcpStream, conn_no: usize, script: Script) {
    let mut buf = Vec::new();
    loop {
        // One request head (these tests send no bodies) per turn.
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        match script(conn_no, &head) {
            None => return,
            Some((answer, close)) => {
                if sock.write_all(&answer).await.is_err() {
                    return;
                }
                if close {
                    return;
                }
            }
        }
    }
}

struct ConnPoolFor(Arc<ConnPool>);

impl ConnPoolFor {
    async fn send(&self, method: Method) -> Result<(u16, HeaderMap, Bytes), SendError> {
        let resp = self.0.send(&method, "/x", &[], &[], &Bytes::new()).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError::Io(std::io::Error::other(e.to_string())))?
            .to_bytes();
        Ok((status, headers, body))
    }
}

fn answer(text: &str) -> Option<(Vec<u8>, bool)> {
    Some((text.as_bytes().to_vec(), false))
}

#[tokio::test]
async fn chunked_answers_stream_and_the_connection_is_reused() {
    let script: Script = Arc::new(|_, _| {
        answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n\
             5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        )
    });
    let (pool, accepted) = upstream(script).await;
    for _ in 0..3 {
        let (status, headers, body) = pool.send(Method::GET).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hello, world");
        assert_eq!(headers["content-type"], "text/plain");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection"
    );
}

#[tokio::test]
async fn long_bodies_stream_and_the_connection_is_reused() {
    let big = "x".repeat(300_000);
    let script: Script = Arc::new(move |_, _| {
        let mut a =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
        a.extend_from_slice(big.as_bytes());
        Some((a, false))
    });
    let (pool, accepted) = upstream(script).await;
    for _ in 0..2 {
        let (_, _, body) = pool.send(Method::GET).await.unwrap();
        assert_eq!(body.len(), 300_000);
        assert!(body.iter().all(|b| *b == b'x'));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn answers_ended_by_close_are_read_and_not_reused() {
    let script: Script =
        Arc::new(|_, _| Some((b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true)));
    let (pool, accepted) = upstream(script).await;
    for _ in 0..2 {
        let (_, _, body) = pool.send(Method::GET).await.unwrap();
        assert_eq!(body, "until the end");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_and_head_and_interim_answers() {
    let script: Script = Arc::new(|_, head| {
        if head.starts_with("HEAD") {
            return answer("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n");
        }
        answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        )
    });
    let (pool, accepted) = upstream(script).await;
    let (status, headers, body) = pool.send(Method::HEAD).await.unwrap();
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], "1234");
    let (status, _, body) = pool.send(Method::POST).await.unwrap();
    assert_eq!((status, body.as_ref()), (201, b"ok".as_ref()));
    // Closed by the upstream's `connection: close`: a new connection.
    pool.send(Method::POST).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    // Each connection answers once, then the upstream closes it (keep-alive promised).
    let script: Script = Arc::new(|_, _| {
        Some((
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            true,
        ))
    });
    let (pool, accepted) = upstream(script).await;
    pool.send(Method::POST).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Not idempotent, so it could not be retried: it must not go on the closed connection.
    let (status, _, _) = pool.send(Method::POST).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// The first connection answers once, then takes the next request and closes unanswered;
/// later connections always answer.
fn answers_once_then_hangs_up() -> Script {
    let seen = Arc::new(AtomicUsize::new(0));
    Arc::new(move |conn, _| {
        if conn == 0 && seen.fetch_add(1, Ordering::SeqCst) > 0 {
            return None;
        }
        answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    })
}

#[tokio::test]
async fn a_connection_closed_unanswered_is_retried_only_for_idempotent_methods() {
    let (pool, accepted) = upstream(answers_once_then_hangs_up()).await;
    pool.send(Method::GET).await.unwrap();
    let (status, _, _) = pool.send(Method::GET).await.unwrap();
    assert_eq!(status, 200, "GET retried on a new connection");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    let (pool, _) = upstream(answers_once_then_hangs_up()).await;
    pool.send(Method::POST).await.unwrap();
    match pool.send(Method::POST).await {
        Err(SendError::Io(_)) => {}
        other => panic!("a POST that may have been processed is not repeated: {other:?}"),
    }
}

#[tokio::test]
async fn malformed_answers_are_errors() {
    for bad in [
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\ncontent-length: five\r\n\r\nhello",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "NOT HTTP\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
    ] {
        let script: Script = Arc::new(move |_, _| answer(bad));
        let (pool, _) = upstream(script).await;
        match pool.send(Method::GET).await {
            Err(SendError::Protocol(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A bad chunk fails the body (the client's connection is then cut), not the head.
    let script: Script =
        Arc::new(|_, _| answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"));
    let (pool, _) = upstream(script).await;
    assert!(pool.send(Method::GET).await.is_err());
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = ConnPoolFor(ConnPool::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(1),
        Duration::from_secs(30),
    ));
    assert!(matches!(
        pool.send(Method::GET).await,
        Err(SendError::Connect(_))
    ));
}
