//! A small HTTP/1.1 client for the API tests: hyper's connection API over a
//! loopback TcpStream, plus a Server-Sent Events reader.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use refract::{ApiState, Host};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Serves the API for `host` on an ephemeral loopback port.
pub async fn start_api(host: &Host) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(refract::serve(listener, ApiState::from_host(host), std::future::pending()));
    addr
}

/// Where a `refract run --http 127.0.0.1:0` child serves, read from its
/// log line (port 0 lets the OS pick a free port). The child's standard
/// error must be piped; the rest of it is drained in the background.
pub fn listening_addr(child: &mut std::process::Child) -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let mut log = BufReader::new(child.stderr.take().expect("stderr piped"));
    let addr = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "refract run exited before serving");
        if line.contains("HTTP API listening") {
            let at = line.find("127.0.0.1:").unwrap();
            let end =
                line[at..].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).map_or(line.len(), |e| at + e);
            break line[at..end].parse().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    addr
}

/// Percent-encodes a query-string value.
pub fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// One response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub headers: hyper::HeaderMap,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// One keep-alive connection, opened again when the server closed it
/// while idle (it does after `HEADER_TIMEOUT`), as a pooled client would.
pub struct Client {
    addr: SocketAddr,
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self { addr, send: Self::open(addr).await }
    }

    async fn open(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send
    }

    async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> hyper::Response<Incoming> {
        self.send_with(method, path, &[], body).await
    }

    /// Sends a request with extra headers.
    pub async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> hyper::Response<Incoming> {
        if self.send.is_closed() || self.send.ready().await.is_err() {
            self.send = Self::open(self.addr).await;
            self.send.ready().await.unwrap();
        }
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        let request = headers
            .iter()
            .fold(request, |r, (name, value)| r.header(*name, *value))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send.send_request(request).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        self.request_with(method, path, &[], body).await
    }

    /// A request with extra headers (`authorization`, `origin`, ...).
    pub async fn request_with(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let response = self.send_with(method, path, headers, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        // An event stream does not end: its body is read with `EventStream`.
        if content_type == "text/event-stream" {
            return Reply { status, content_type, text: String::new(), headers };
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, content_type, text: String::from_utf8(bytes.to_vec()).unwrap(), headers }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, Vec::new()).await
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, body.to_string().into_bytes()).await
    }

    /// Appends one event and returns the consistency token, panicking on any non-200.
    pub async fn append(&mut self, stream: &str, event_type: &str, payload: Value, expected: Value) -> u64 {
        let body =
            serde_json::json!({ "expected_version": expected, "events": [{ "type": event_type, "payload": payload }] });
        let reply = self.post(&format!("/streams/{stream}/events"), &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["position"].as_u64().unwrap()
    }
}

/// A Server-Sent Events stream being read.
pub struct EventStream {
    body: Incoming,
    buffer: String,
    _client: Client,
}

impl EventStream {
    pub async fn open(addr: SocketAddr, path: &str) -> Self {
        let mut client = Client::connect(addr).await;
        let response = client.send("GET", path, Vec::new()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { body: response.into_body(), buffer: String::new(), _client: client }
    }

    /// Opens a stream with extra request headers (`Accept`, `Last-Event-ID`).
    pub async fn open_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut client = Client::connect(addr).await;
        let response = client.send_with("GET", path, headers, Vec::new()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { body: response.into_body(), buffer: String::new(), _client: client }
    }

    /// The next event's name and JSON data (keep-alive comments are skipped).
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let frame = self.body.frame().await.expect("event stream ended").unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }
}

/// Reads every page of `path` (which must not end in a cursor), `limit` at
/// a time: the ids and documents, in order.
pub async fn all_pages(client: &mut Client, path: &str, limit: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&limit={limit}&cursor={}", enc(c)),
            None => format!("{path}&limit={limit}"),
        };
        let reply = client.get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text);
        let page = reply.json();
        let docs = page["documents"].as_array().unwrap();
        assert!(docs.len() <= limit);
        out.extend(docs.iter().map(|d| (d["id"].as_str().unwrap().to_owned(), d["document"].clone())));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}
