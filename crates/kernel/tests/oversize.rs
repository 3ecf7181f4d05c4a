//! An oversized request head (a 1 MB `Authorization` header, too many header fields) is
//! answered `431` problem+json and the connection closed cleanly, on the host's own stack,
//! through a front handler and on worker threads; a 431 a service answers itself passes
//! unchanged.

use axum::{
    Router,
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use plt_kernel::{FrontFuture, FrontHandler, ServiceHost, config::ServerConfig};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn server_config() -> ServerConfig {
    ServerConfig {
        shutdown_timeout: Duration::from_secs(5),
        body_limit_bytes: 1024,
        readiness_timeout: Duration::from_millis(300),
        tls: Default::default(),
    }
}

async fn start(host: ServiceHost) -> SocketAddr {
    let bound = host.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.run(std::future::pending()));
    addr
}

/// Sends `head` (then `rest`, if any) on a raw connection and reads everything the server
/// answers until it closes. A reset before the end is an error.
async fn exchange(addr: SocketAddr, head: Vec<u8>) -> std::io::Result<String> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        // The server may stop reading: a failed write is the server's business.
        let _ = w.write_all(&head).await;
        w
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no end of the answer within 10 s"))??;
    drop(writer);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn oversized_request(path: &str, header_bytes: usize) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        "a".repeat(header_bytes)
    )
    .into_bytes()
}

/// The answer is 431 with the platform's problem+json, and says it closes.
fn assert_431(answer: &str) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {answer:?}"));
    assert!(
        head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(lower.contains("connection: close"), "{head}");
    let problem: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(problem["status"], 431);
    assert_eq!(problem["code"], "invalid_argument");
    assert_eq!(problem["type"], "urn:plt:problem:invalid_argument");
    assert!(problem["title"].is_string() && problem["detail"].is_string());
}

fn routes() -> Router {
    Router::new().route(
        "/own-431",
        get(|| async {
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                [("content-type", "text/plain")],
                "the service's own",
            )
        }),
    )
}

#[tokio::test]
async fn a_one_megabyte_header_gets_431_problem_json_on_the_host() {
    let addr = start(ServiceHost::new("t", &server_config()).http(routes())).await;
    let answer = exchange(addr, oversized_request("/healthz", 1 << 20))
        .await
        .expect("an answer, not a reset");
    assert_431(&answer);

    // Much more than the buffer, and far more header fields than hyper parses.
    let answer = exchange(addr, oversized_request("/healthz", 8 << 20))
        .await
        .unwrap();
    assert_431(&answer);
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_431(&exchange(addr, many.into_bytes()).await.unwrap());

    // The host still serves, and a normal request on a kept-alive connection first does not
    // change the answer to the oversized one after it.
    let mut both = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    both.extend(oversized_request("/healthz", 1 << 20));
    let answer = exchange(addr, both).await.unwrap();
    let (first, rest) = answer.split_at(answer.find("HTTP/1.1 431").expect("a 431"));
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert_431(rest);
}

#[tokio::test]
async fn a_431_the_service_answers_itself_is_passed_unchanged() {
    let addr = start(ServiceHost::new("t", &server_config()).http(routes())).await;
    let answer = exchange(
        addr,
        b"GET /own-431 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.ends_with("the service's own"), "{answer}");
    assert!(!answer.contains("problem+json"), "{answer}");

    // The service's 431, then an oversized head on the same connection: each answered as
    // its own.
    let mut both = b"GET /own-431 HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    both.extend(oversized_request("/healthz", 1 << 20));
    let answer = exchange(addr, both).await.unwrap();
    let (first, rest) = answer
        .split_once("the service's own")
        .expect("the service's 431");
    assert!(first.starts_with("HTTP/1.1 431 "), "{first}");
    assert!(!first.contains("problem+json"), "{first}");
    assert_431(rest);
}

/// A front handler that serves everything (as the gateway's does).
struct Everything;

impl FrontHandler for Everything {
    fn serve(&self, req: Request, _peer: Option<SocketAddr>) -> Result<FrontFuture, Request> {
        let own = req.uri().path() == "/own-431";
        Ok(Box::pin(async move {
            if own {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "upstream's").into_response()
            } else {
                Response::new("front".into())
            }
        }))
    }
}

#[tokio::test]
async fn front_handler_and_worker_threads_answer_431_too() {
    let host = ServiceHost::new("t", &server_config())
        .front(Arc::new(Everything))
        .workers(2);
    let addr = start(host).await;
    for _ in 0..4 {
        let answer = exchange(addr, oversized_request("/anything", 1 << 20))
            .await
            .expect("an answer, not a reset");
        assert_431(&answer);
    }
    let answer = exchange(
        addr,
        b"GET /own-431 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
    )
    .await
    .unwrap();
    assert!(answer.ends_with("upstream's"), "{answer}");
}
